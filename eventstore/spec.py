"""The specification a task is added with: Azure Batch's Add Task body, Blaxel's spec, HealthOmics' resources, and
free labels. Unknown or malformed fields are refused with a message that names the field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping, cast

import orjson
import pydantic
from pydantic import AfterValidator, ConfigDict, Field, StrictBool, StrictInt
from pydantic import StrictStr as _StrictStr
from typing_extensions import Required, TypedDict  # pydantic takes this TypedDict before Python 3.12

from .durations import parse_duration
from .errors import ValidationError

TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


# Every string a task carries: PostgreSQL cannot store NUL characters, so neither engine accepts them. A pattern,
# checked by pydantic itself (a Python validator on every string costs a quarter of a specification's validation).
_NO_NUL = r"\A[^\x00]*\z"
StrictStr = Annotated[_StrictStr, pydantic.StringConstraints(pattern=_NO_NUL)]


def _duration(value: str) -> str:
    parse_duration(value)
    return value


def _task_id(value: str) -> str:
    if not TASK_ID.match(value):
        raise ValueError("task ids are 1 to 64 letters, digits, '-' or '_'")
    return value


Duration = Annotated[StrictStr, AfterValidator(_duration)]
TaskId = Annotated[StrictStr, AfterValidator(_task_id)]
Int32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]


# Each part of a specification is a TypedDict: validated by pydantic into plain dicts (what the TaskAdded event
# records), with no model instances to build and dump again.
_FORBID = ConfigDict(extra="forbid")


class IdentityReference(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    resourceId: StrictStr | None


class ResourceFile(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    autoStorageContainerName: StrictStr | None
    storageContainerUrl: StrictStr | None
    httpUrl: StrictStr | None
    blobSource: StrictStr | None  # the older API's name for httpUrl, as in the seed's examples
    blobPrefix: StrictStr | None
    filePath: StrictStr | None
    fileMode: StrictStr | None
    identityReference: IdentityReference | None


class NameValue(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    name: Required[StrictStr]
    value: StrictStr | None


class TaskConstraints(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    maxWallClockTime: Duration | None
    retentionTime: Duration | None
    maxTaskRetryCount: Annotated[StrictInt, Field(ge=-1, le=2**31 - 1)] | None


class TaskIdRange(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    start: Required[Int32]
    end: Required[Int32]


class TaskDependencies(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    taskIds: list[TaskId] | None
    taskIdRanges: list[TaskIdRange] | None


class ExitOptions(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    jobAction: Literal["none", "disable", "terminate"] | None
    dependencyAction: Literal["satisfy", "block"] | None


class ExitCodeMapping(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    code: Required[Int32]
    exitOptions: Required[ExitOptions]


class ExitCodeRangeMapping(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    start: Required[Int32]
    end: Required[Int32]
    exitOptions: Required[ExitOptions]


class ExitConditions(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    exitCodes: list[ExitCodeMapping] | None
    exitCodeRanges: list[ExitCodeRangeMapping] | None
    preProcessingError: ExitOptions | None
    fileUploadError: ExitOptions | None
    default: ExitOptions | None


class OutputFileBlobContainerDestination(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    path: StrictStr | None
    containerUrl: Required[StrictStr]
    identityReference: IdentityReference | None
    uploadHeaders: list[NameValue] | None


class OutputFileDestination(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    container: Required[OutputFileBlobContainerDestination]


class OutputFileUploadOptions(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    uploadCondition: Required[Literal["tasksuccess", "taskfailure", "taskcompletion"]]


class OutputFile(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    filePattern: Required[StrictStr]
    destination: Required[OutputFileDestination]
    uploadOptions: Required[OutputFileUploadOptions]


class ContainerRegistry(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    username: StrictStr | None
    password: StrictStr | None
    registryServer: StrictStr | None
    identityReference: IdentityReference | None


class ContainerHostBatchBindMountEntry(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    source: Literal["Shared", "Startup", "VfsMounts", "Task", "JobPrep", "Applications"] | None
    isReadOnly: StrictBool | None


def _distinct_sources(mounts: list[ContainerHostBatchBindMountEntry]) -> list[ContainerHostBatchBindMountEntry]:
    sources = [m["source"] for m in mounts if m.get("source") is not None]
    if len(sources) != len(set(sources)):
        raise ValueError("each source may be mounted once")
    return mounts


BindMounts = Annotated[list[ContainerHostBatchBindMountEntry], AfterValidator(_distinct_sources)]


class TaskContainerSettings(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    imageName: Required[StrictStr]
    containerRunOptions: StrictStr | None
    registry: ContainerRegistry | None
    workingDirectory: Literal["taskWorkingDirectory", "containerImageDefault"] | None
    containerHostBatchBindMounts: BindMounts | None


class AutoUserSpecification(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    scope: Literal["task", "pool"] | None
    elevationLevel: Literal["nonadmin", "admin"] | None


class UserIdentity(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    username: StrictStr | None
    autoUser: AutoUserSpecification | None


class MultiInstanceSettings(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    numberOfInstances: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None
    coordinationCommandLine: StrictStr | None
    commonResourceFiles: list[ResourceFile] | None


class ApplicationPackageReference(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    applicationId: Required[StrictStr]
    version: StrictStr | None


class AffinityInformation(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    affinityId: Required[StrictStr]


class AuthenticationTokenSettings(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    access: list[Literal["job"]] | None


class Resources(TypedDict, total=False):
    """HealthOmics' task resources."""

    __pydantic_config__ = _FORBID  # type: ignore[misc]
    # HealthOmics' Integers are 32-bit; unbounded, 2**64 failed the append with a TypeError from the JSON encoder.
    cpus: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None
    memory: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None
    gpus: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None
    instanceType: StrictStr | None


LabelKey = Annotated[StrictStr, Field(min_length=1, max_length=63)]
LabelValue = Annotated[StrictStr, Field(max_length=256)]


class TaskSpecDocument(TypedDict, total=False):
    __pydantic_config__ = _FORBID  # type: ignore[misc]
    id: Required[TaskId]
    displayName: Annotated[StrictStr, Field(max_length=1024)] | None
    commandLine: StrictStr | None
    constraints: TaskConstraints | None
    dependsOn: TaskDependencies | None
    exitConditions: ExitConditions | None
    environmentSettings: list[NameValue] | None
    resourceFiles: list[ResourceFile] | None
    outputFiles: list[OutputFile] | None
    requiredSlots: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None
    containerSettings: TaskContainerSettings | None
    userIdentity: UserIdentity | None
    multiInstanceSettings: MultiInstanceSettings | None
    applicationPackageReferences: list[ApplicationPackageReference] | None
    affinityInfo: AffinityInformation | None
    authenticationTokenSettings: AuthenticationTokenSettings | None
    # Blaxel's spec
    maxRetries: Annotated[StrictInt, Field(ge=-1, le=2**31 - 1)] | None
    timeout: Duration | None
    # HealthOmics' resources
    resources: Resources | None
    labels: dict[LabelKey, LabelValue] | None


_DOCUMENT = pydantic.TypeAdapter(TaskSpecDocument)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A validated specification: the task's id, and the rest as its TaskAdded event records it."""

    id: str
    data: dict[str, Any]

    def to_data(self) -> dict[str, Any]:
        """The specification as recorded in the TaskAdded event: camelCase, in the order of ``TaskSpecDocument``'s
        fields, absent and null fields left out, no id."""
        return self.data


def parse_spec(raw: Mapping[str, Any] | TaskSpec, *, where: str = "") -> TaskSpec:
    """Validate one task's specification; :class:`ValidationError` names the first offending field."""
    if type(raw) is not dict:  # (a dict is a Mapping: asking the ABC costs more than the rest of this function)
        if isinstance(raw, TaskSpec):
            return raw
        if not isinstance(raw, Mapping):
            raise ValidationError(where or "task", "a task is a JSON object")
    try:
        document = cast(dict[str, Any], _DOCUMENT.validate_python(raw))
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = _path(err["loc"])
        if where:
            field = f"{where}.{field}" if field else where
        raise ValidationError(field, error_message(err)) from None
    task_id = document.pop("id")
    if b"null" in orjson.dumps(document):  # cheap: a field given as null is a field left out
        document = _without_nulls(document)
    return TaskSpec(task_id, document)


def error_message(err: Mapping[str, Any]) -> str:
    """What one of pydantic's errors says, in this store's words."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == _NO_NUL:
        return "must not contain NUL characters"
    return str(err["msg"]).removeprefix("Value error, ")


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("", "[key]"):
            out += "[key]" if part else ""
        elif isinstance(part, str) and part.startswith(("function-", "literal[", "constrained-")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out
