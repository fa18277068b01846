"""Subject constants and builders."""

import pytest
from loom_protocol import MembershipChange, subjects

BUILDERS = [
    (subjects.task_submitted, "loom.task.submitted."),
    (subjects.task_assigned, "loom.task.assigned."),
    (subjects.task_status, "loom.task.status."),
    (subjects.task_reports_of, "loom.task.report."),
    (subjects.task_cancel, "loom.task.cancel."),
    (subjects.task_cancel_request, "loom.task.cancelrequest."),
    (subjects.task_dead, "loom.task.dead."),
    (subjects.registry_heartbeat, "loom.registry.heartbeat."),
    (subjects.rejected, "loom.rejected."),
]

BAD_TOKENS = ["", "a.b", "a*", "*", ">", "a>", "a b", "a\tb", "a\n", " "]


def test_constants_are_pinned() -> None:
    assert subjects.PREFIX == "loom"
    assert subjects.TASK_SUBMITTED_ALL == "loom.task.submitted.*"
    assert subjects.TASK_ASSIGNED_ALL == "loom.task.assigned.*"
    assert subjects.TASK_STATUS_ALL == "loom.task.status.*"
    assert subjects.TASK_REPORT_ALL == "loom.task.report.*.*"
    assert subjects.TASK_CANCEL_ALL == "loom.task.cancel.*"
    assert subjects.TASK_CANCEL_REQUEST_ALL == "loom.task.cancelrequest.*"
    assert subjects.TASK_DEAD_ALL == "loom.task.dead.*"
    assert subjects.TASK_ALL == "loom.task.>"
    assert subjects.EVENT_ALL == "loom.event.>"
    assert subjects.REGISTRY_HEARTBEAT_ALL == "loom.registry.heartbeat.*"
    assert subjects.REGISTRY_PICK == "loom.registry.pick"
    assert subjects.REGISTRY_AGENTS == "loom.registry.agents"
    assert subjects.REGISTRY_MEMBER_ALL == "loom.registry.member.*"
    assert subjects.REGISTRY_MEMBER_UP == "loom.registry.member.up"
    assert subjects.REGISTRY_MEMBER_DOWN == "loom.registry.member.down"
    assert subjects.REJECTED_ALL == "loom.rejected.>"


@pytest.mark.parametrize(("builder", "prefix"), BUILDERS)
def test_builders(builder: object, prefix: str) -> None:
    built = builder("calc_1-x")  # type: ignore[operator]
    assert built in (prefix + "calc_1-x", prefix + "calc_1-x.*")


def test_a_report_subject_names_the_instance_then_the_task() -> None:
    assert subjects.task_report("w-1", "run:1") == "loom.task.report.w-1.run:1"
    assert subjects.task_reports_of("w-1") == "loom.task.report.w-1.*"
    for bad in BAD_TOKENS:
        with pytest.raises(ValueError):
            subjects.task_report(bad, "t1")
        with pytest.raises(ValueError):
            subjects.task_report("w1", bad)


@pytest.mark.parametrize(("builder", "prefix"), BUILDERS)
@pytest.mark.parametrize("token", BAD_TOKENS)
def test_builders_reject_bad_tokens(builder: object, prefix: str, token: str) -> None:
    with pytest.raises(ValueError):
        builder(token)  # type: ignore[operator]


def test_task_ids_with_colons_are_valid_tokens() -> None:
    assert subjects.task_status("run:1") == "loom.task.status.run:1"


def test_cancel_requests_and_cancels_are_told_apart() -> None:
    request = subjects.task_cancel_request("run:1")
    assert request == "loom.task.cancelrequest.run:1"
    assert subjects.token_of(request, subjects.TASK_CANCEL_REQUEST_ALL) == "run:1"
    with pytest.raises(ValueError):
        subjects.token_of(request, subjects.TASK_CANCEL_ALL)
    with pytest.raises(ValueError):
        subjects.token_of(subjects.task_cancel("run:1"), subjects.TASK_CANCEL_REQUEST_ALL)


def test_event_subject_keeps_the_dots_of_the_type() -> None:
    assert subjects.event("agent.thought") == "loom.event.agent.thought"
    assert subjects.event("error") == "loom.event.error"
    assert subjects.event("registry.member.up") == "loom.event.registry.member.up"


@pytest.mark.parametrize(
    "event_type", ["", ".", "agent.", ".agent", "agent..thought", "agent.*", "a.>", "a b"]
)
def test_event_subject_rejects_bad_types(event_type: str) -> None:
    with pytest.raises(ValueError):
        subjects.event(event_type)


def test_registry_member() -> None:
    assert subjects.registry_member(MembershipChange.UP) == subjects.REGISTRY_MEMBER_UP
    assert subjects.registry_member("down") == subjects.REGISTRY_MEMBER_DOWN
    with pytest.raises(ValueError):
        subjects.registry_member("sideways")
    with pytest.raises(ValueError):
        subjects.registry_member("*")


def test_token_of_single_wildcard() -> None:
    assert subjects.token_of("loom.task.submitted.calc", subjects.TASK_SUBMITTED_ALL) == "calc"
    assert subjects.token_of(subjects.task_status("t:1"), subjects.TASK_STATUS_ALL) == "t:1"
    assert subjects.token_of("loom.registry.member.up", subjects.REGISTRY_MEMBER_ALL) == "up"


def test_token_of_tail_wildcard() -> None:
    assert subjects.token_of("loom.event.agent.thought", subjects.EVENT_ALL) == "agent.thought"
    assert subjects.token_of("loom.rejected.dispatcher", subjects.REJECTED_ALL) == "dispatcher"


@pytest.mark.parametrize(
    ("subject", "pattern"),
    [
        ("loom.task.assigned.w1", subjects.TASK_SUBMITTED_ALL),  # other prefix
        ("loom.task.submitted.a.b", subjects.TASK_SUBMITTED_ALL),  # two tokens for '*'
        ("loom.task.submitted.", subjects.TASK_SUBMITTED_ALL),  # empty token
        ("loom.event.", subjects.EVENT_ALL),
        ("loom.event.a..b", subjects.EVENT_ALL),
        ("loom.task.submitted.calc", subjects.REGISTRY_PICK),  # not a wildcard
        ("loom.task.x.y", "loom.*.x.*"),  # wildcard before the last token
    ],
)
def test_token_of_rejects_mismatches(subject: str, pattern: str) -> None:
    with pytest.raises(ValueError):
        subjects.token_of(subject, pattern)
