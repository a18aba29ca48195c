"""What the service says about a task (`TaskRecord`), the state names, and a finished `Result`."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import ProtocolError
from .request import GenerationRequest
from .store import StoredImage

State = Literal["pacing", "sending", "submitted",
                 "waiting", "queuing", "generating", "success", "fail", "error"]
"""Every state a task or job can be in, in the order a task goes through them.

`pacing`: waiting in this process's send queue for a slot under the create limit, nothing sent yet (a `Job`
only); `sending`: its createTask is on its way, no answer yet (a `Job` only); `submitted`: created, not checked
yet (a `Job` only); `waiting`, `queuing`, `generating`: the service is working on it; `success`, `fail`: the
service's last word; `error`: this client gave up on the job (timeout, download or connection problem; the task
may still finish on the service, a `Job` only)."""
STATES: tuple[State, ...] = get_args(State)
RUNNING_STATES: tuple[State, ...] = STATES[STATES.index("waiting"):STATES.index("success")]  # the service is working
FINAL_STATES: tuple[State, ...] = STATES[STATES.index("success"):STATES.index("error")]  # the service is done


def _decode_twice(value: Any, what: str, task_id: str | None, *, final: bool = False) -> Any:
    """`param` and `resultJson` are JSON encoded as strings inside the JSON answer."""
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        return value
    if not isinstance(value, str):
        raise ProtocolError(f"`{what}` should be a JSON string, got {type(value).__name__}.", task_id=task_id,
                            final=final)
    try:
        return json.loads(value)
    except ValueError:
        raise ProtocolError(f"`{what}` is not valid JSON: {value[:80]!r}.", task_id=task_id, final=final) from None


def _result_urls(value: Any, task_id: str) -> list[str]:
    """The image URLs of a successful task. A success without readable URLs is the service's last word on the
    task (asking again gives the same answer), so these errors are built `final`."""
    result = _decode_twice(value, "resultJson", task_id, final=True)
    if not isinstance(result, dict) or "resultUrls" not in result:
        raise ProtocolError("The task succeeded but `resultJson` has no `resultUrls`.", task_id=task_id, final=True)
    urls = result["resultUrls"]
    if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
        raise ProtocolError("`resultUrls` is not a list of URLs.", task_id=task_id, final=True)
    if not urls:
        raise ProtocolError("The task succeeded but returned no image URLs.", task_id=task_id, final=True)
    return list(urls)


def _ms(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class TaskRecord:
    """One answer of recordInfo, decoded. Times are Unix milliseconds."""

    task_id: str
    state: State
    model: str | None = None
    param: dict | None = None
    result_urls: list[str] = field(default_factory=list)
    fail_code: str | None = None
    fail_msg: str | None = None
    cost_time_ms: int | None = None
    create_time_ms: int | None = None
    update_time_ms: int | None = None
    complete_time_ms: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_data(cls, data: Any, task_id: str | None = None) -> "TaskRecord":
        """Parse `data` of a recordInfo answer; a malformed one raises ProtocolError naming what was wrong."""
        if not isinstance(data, dict):
            raise ProtocolError(f"recordInfo returned no task data (got {type(data).__name__}).", task_id=task_id)
        tid = data.get("taskId") or task_id
        if not isinstance(tid, str) or not tid:
            raise ProtocolError("recordInfo answer has no taskId.", task_id=task_id)
        if task_id and tid != task_id:
            raise ProtocolError(f"recordInfo was asked about {task_id} but answered about {tid!r}.",
                                task_id=task_id)
        state = data.get("state")
        if state not in RUNNING_STATES + FINAL_STATES:
            raise ProtocolError(f"recordInfo answer has unknown state {state!r}.", task_id=tid)
        param = _decode_twice(data.get("param"), "param", tid)
        urls = _result_urls(data.get("resultJson"), tid) if state == "success" else []
        return cls(task_id=tid, state=state, model=data.get("model"),
                   param=param if isinstance(param, dict) else None, result_urls=urls,
                   fail_code=str(data["failCode"]) if data.get("failCode") not in (None, "") else None,
                   fail_msg=str(data["failMsg"]) if data.get("failMsg") not in (None, "") else None,
                   cost_time_ms=_ms(data.get("costTime")),
                   create_time_ms=_ms(data.get("createTime")), update_time_ms=_ms(data.get("updateTime")),
                   complete_time_ms=_ms(data.get("completeTime")))

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Result:
    """A finished, successful task with its images downloaded and stored."""

    task_id: str
    request: GenerationRequest | None
    state: State
    result_urls: list[str]
    images: list[StoredImage]
    record: TaskRecord | None = None
    reused: bool = False

    @property
    def cost_time_ms(self) -> int | None:
        return self.record.cost_time_ms if self.record else None

    @property
    def paths(self) -> list[str]:
        return [str(im.path) for im in self.images]

    def _repr_html_(self) -> str:
        from .cards import result_html

        return result_html(self)
