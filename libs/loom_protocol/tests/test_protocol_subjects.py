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


def test_an_event_subject_names_its_sender_and_keeps_the_dots_of_the_type() -> None:
    assert subjects.instance_event("w-1", "agent.thought") == "loom.event.worker.w-1.agent.thought"
    assert subjects.instance_event("w-1", "error") == "loom.event.worker.w-1.error"
    assert subjects.service_event("dispatcher", "task.submitted") == "loom.event.dispatcher.task.submitted"
    assert subjects.service_event("ingest", "registry.member.up") == "loom.event.ingest.registry.member.up"
    assert subjects.instance_events_of("w-1") == "loom.event.worker.w-1.>"
    assert subjects.service_events_of("ingest") == "loom.event.ingest.>"


@pytest.mark.parametrize(
    "event_type", ["", ".", "agent.", ".agent", "agent..thought", "agent.*", "a.>", "a b"]
)
def test_event_subject_rejects_bad_types(event_type: str) -> None:
    with pytest.raises(ValueError):
        subjects.instance_event("w1", event_type)
    with pytest.raises(ValueError):
        subjects.service_event("ingest", event_type)


@pytest.mark.parametrize("instance", ["", "w.1", "*", ">", "w 1"])
def test_event_subject_rejects_bad_instances(instance: str) -> None:
    with pytest.raises(ValueError):
        subjects.instance_event(instance, "agent.thought")
    with pytest.raises(ValueError):
        subjects.instance_events_of(instance)


@pytest.mark.parametrize("service", ["worker", "registry", "query", "", "*"])
def test_only_the_event_services_have_event_subjects_of_their_own(service: str) -> None:
    with pytest.raises(ValueError, match="does not publish events"):
        subjects.service_event(service, "agent.thought")


def test_the_sender_and_the_type_are_read_back_from_an_event_subject() -> None:
    sender = subjects.event_sender(subjects.instance_event("w-1", "llm.usage"))
    assert sender == subjects.EventSender("worker", "w-1", "llm.usage")
    sender = subjects.event_sender(subjects.service_event("dispatcher", "task.completed"))
    assert sender == subjects.EventSender("dispatcher", None, "task.completed")
    assert subjects.event_sender("loom.event.ingest.x").event_type == "x"


@pytest.mark.parametrize(
    "subject",
    [
        "loom.event.agent.thought",  # no sender
        "loom.event.worker.w-1",  # no type
        "loom.event.worker",
        "loom.event.ingest",
        "loom.event.registry.member.up",  # not a service that publishes events
        "loom.event.worker.w-1.a..b",
        "loom.task.status.t1",
    ],
)
def test_a_subject_without_a_sender_is_not_an_event_subject(subject: str) -> None:
    with pytest.raises(ValueError, match="not an event subject"):
        subjects.event_sender(subject)


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
    assert (
        subjects.token_of("loom.event.worker.w1.agent.thought", subjects.EVENT_ALL)
        == "worker.w1.agent.thought"
    )
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


@pytest.mark.parametrize(
    ("subject", "event_type", "instance", "reason"),
    [
        ("loom.event.worker.w1.llm.usage", "llm.usage", "w1", None),
        ("loom.event.worker.w1.llm.usage", "llm.usage", None, None),
        ("loom.event.dispatcher.task.completed", "task.completed", "w7", None),
        (
            "loom.event.worker.w1.llm.usage",
            "llm.usage",
            "w2",
            "must name instance 'w1', its sender, not 'w2'",
        ),
        (
            "loom.event.worker.w1.llm.usage",
            "agent.thought",
            "w1",
            "must be of type 'llm.usage', not 'agent.thought'",
        ),
        ("loom.event.llm.usage", "llm.usage", None, "is not an event subject"),
    ],
)
def test_an_event_may_come_only_from_the_sender_and_of_the_type_its_subject_names(
    subject: str, event_type: str, instance: str | None, reason: str | None
) -> None:
    problem = subjects.event_sender_problem(subject, event_type, instance)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and reason in problem, problem
