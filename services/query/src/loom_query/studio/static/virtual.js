// @ts-check
/** A virtual list: rows of a fixed height of which only the visible ones (and a few around
 * them) are in the DOM, so a list of 100k rows scrolls and updates like one of 50. */

import { h, rafThrottle } from "./util.js";

export class VirtualList {
  /**
   * @param {HTMLElement} scroller the scrolling element (overflow: auto; a height of its own)
   * @param {{rowHeight: number, count: () => number, render: (index: number) => HTMLElement, overscan?: number, onRender?: (first: number, last: number) => void}} opts
   */
  constructor(scroller, opts) {
    this.scroller = scroller;
    this.opts = opts;
    this.inner = h("div", { class: "vlist-inner" });
    this.scroller.append(this.inner);
    this.scroller.classList.add("vlist");
    this.schedule = rafThrottle(() => this.render());
    this.onScroll = () => this.schedule();
    this.scroller.addEventListener("scroll", this.onScroll, { passive: true });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.scroller);
    /** @type {[number, number]} */
    this.shown = [0, -1];
  }

  /** Re-render on the next frame (after the data changed). */
  refresh() {
    this.schedule();
  }

  /** Render now. */
  render() {
    const { rowHeight, count, render } = this.opts;
    const overscan = this.opts.overscan ?? 8;
    const n = count();
    this.inner.style.height = `${n * rowHeight}px`;
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / rowHeight) - overscan);
    const last = Math.min(n - 1, Math.ceil((top + height) / rowHeight) + overscan);
    const frag = document.createDocumentFragment();
    for (let i = first; i <= last; i++) {
      const row = render(i);
      row.style.position = "absolute";
      row.style.top = `${i * rowHeight}px`;
      row.style.height = `${rowHeight}px`;
      row.style.left = "0";
      row.style.right = "0";
      row.dataset.index = String(i);
      frag.append(row);
    }
    this.inner.replaceChildren(frag);
    this.shown = [first, last];
    if (this.opts.onRender) this.opts.onRender(first, last);
  }

  /** @param {number} index */
  scrollToIndex(index) {
    const { rowHeight } = this.opts;
    const top = index * rowHeight;
    const view = this.scroller.clientHeight;
    if (top < this.scroller.scrollTop || top + rowHeight > this.scroller.scrollTop + view) {
      this.scroller.scrollTop = Math.max(0, top - view / 2);
    }
    this.schedule();
  }

  destroy() {
    this.scroller.removeEventListener("scroll", this.onScroll);
    this.resize.disconnect();
    this.inner.remove();
  }
}
