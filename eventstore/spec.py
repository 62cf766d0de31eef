"""The specification a task is added with: Azure Batch's Add Task body, Blaxel's spec, HealthOmics' resources, and
free labels. Unknown or malformed fields are refused with a message that names the field."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Mapping

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt
from pydantic import StrictStr as _StrictStr

from .durations import parse_duration
from .errors import ValidationError

TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Every string a task carries: PostgreSQL cannot store NUL characters, so neither engine accepts them.
StrictStr = Annotated[_StrictStr, AfterValidator(_no_nul)]


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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentityReference(_Model):
    resourceId: StrictStr | None = None


class ResourceFile(_Model):
    autoStorageContainerName: StrictStr | None = None
    storageContainerUrl: StrictStr | None = None
    httpUrl: StrictStr | None = None
    blobSource: StrictStr | None = None  # the older API's name for httpUrl, as in the seed's examples
    blobPrefix: StrictStr | None = None
    filePath: StrictStr | None = None
    fileMode: StrictStr | None = None
    identityReference: IdentityReference | None = None


class NameValue(_Model):
    name: StrictStr
    value: StrictStr | None = None


class TaskConstraints(_Model):
    maxWallClockTime: Duration | None = None
    retentionTime: Duration | None = None
    maxTaskRetryCount: Annotated[StrictInt, Field(ge=-1, le=2**31 - 1)] | None = None


class TaskIdRange(_Model):
    start: Int32
    end: Int32


class TaskDependencies(_Model):
    taskIds: list[TaskId] | None = None
    taskIdRanges: list[TaskIdRange] | None = None


class ExitOptions(_Model):
    jobAction: Literal["none", "disable", "terminate"] | None = None
    dependencyAction: Literal["satisfy", "block"] | None = None


class ExitCodeMapping(_Model):
    code: Int32
    exitOptions: ExitOptions


class ExitCodeRangeMapping(_Model):
    start: Int32
    end: Int32
    exitOptions: ExitOptions


class ExitConditions(_Model):
    exitCodes: list[ExitCodeMapping] | None = None
    exitCodeRanges: list[ExitCodeRangeMapping] | None = None
    preProcessingError: ExitOptions | None = None
    fileUploadError: ExitOptions | None = None
    default: ExitOptions | None = None


class OutputFileBlobContainerDestination(_Model):
    path: StrictStr | None = None
    containerUrl: StrictStr
    identityReference: IdentityReference | None = None
    uploadHeaders: list[NameValue] | None = None


class OutputFileDestination(_Model):
    container: OutputFileBlobContainerDestination


class OutputFileUploadOptions(_Model):
    uploadCondition: Literal["tasksuccess", "taskfailure", "taskcompletion"]


class OutputFile(_Model):
    filePattern: StrictStr
    destination: OutputFileDestination
    uploadOptions: OutputFileUploadOptions


class ContainerRegistry(_Model):
    username: StrictStr | None = None
    password: StrictStr | None = None
    registryServer: StrictStr | None = None
    identityReference: IdentityReference | None = None


class ContainerHostBatchBindMountEntry(_Model):
    source: Literal["Shared", "Startup", "VfsMounts", "Task", "JobPrep", "Applications"] | None = None
    isReadOnly: StrictBool | None = None


class TaskContainerSettings(_Model):
    imageName: StrictStr
    containerRunOptions: StrictStr | None = None
    registry: ContainerRegistry | None = None
    workingDirectory: Literal["taskWorkingDirectory", "containerImageDefault"] | None = None
    containerHostBatchBindMounts: list[ContainerHostBatchBindMountEntry] | None = None

    @pydantic.field_validator("containerHostBatchBindMounts")
    @classmethod
    def _distinct_sources(cls, mounts: list[ContainerHostBatchBindMountEntry] | None) -> Any:
        sources = [m.source for m in mounts or [] if m.source is not None]
        if len(sources) != len(set(sources)):
            raise ValueError("each source may be mounted once")
        return mounts


class AutoUserSpecification(_Model):
    scope: Literal["task", "pool"] | None = None
    elevationLevel: Literal["nonadmin", "admin"] | None = None


class UserIdentity(_Model):
    username: StrictStr | None = None
    autoUser: AutoUserSpecification | None = None


class MultiInstanceSettings(_Model):
    numberOfInstances: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None
    coordinationCommandLine: StrictStr | None = None
    commonResourceFiles: list[ResourceFile] | None = None


class ApplicationPackageReference(_Model):
    applicationId: StrictStr
    version: StrictStr | None = None


class AffinityInformation(_Model):
    affinityId: StrictStr


class AuthenticationTokenSettings(_Model):
    access: list[Literal["job"]] | None = None


class Resources(_Model):
    """HealthOmics' task resources."""

    cpus: Annotated[StrictInt, Field(ge=0)] | None = None
    memory: Annotated[StrictInt, Field(ge=0)] | None = None
    gpus: Annotated[StrictInt, Field(ge=0)] | None = None
    instanceType: StrictStr | None = None


LabelKey = Annotated[StrictStr, Field(min_length=1, max_length=63)]
LabelValue = Annotated[StrictStr, Field(max_length=256)]


class TaskSpec(_Model):
    id: TaskId
    displayName: Annotated[StrictStr, Field(max_length=1024)] | None = None
    commandLine: StrictStr | None = None
    constraints: TaskConstraints | None = None
    dependsOn: TaskDependencies | None = None
    exitConditions: ExitConditions | None = None
    environmentSettings: list[NameValue] | None = None
    resourceFiles: list[ResourceFile] | None = None
    outputFiles: list[OutputFile] | None = None
    requiredSlots: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None
    containerSettings: TaskContainerSettings | None = None
    userIdentity: UserIdentity | None = None
    multiInstanceSettings: MultiInstanceSettings | None = None
    applicationPackageReferences: list[ApplicationPackageReference] | None = None
    affinityInfo: AffinityInformation | None = None
    authenticationTokenSettings: AuthenticationTokenSettings | None = None
    # Blaxel's spec
    maxRetries: Annotated[StrictInt, Field(ge=-1, le=2**31 - 1)] | None = None
    timeout: Duration | None = None
    # HealthOmics' resources
    resources: Resources | None = None
    labels: dict[LabelKey, LabelValue] | None = None

    def to_data(self) -> dict[str, Any]:
        """The specification as recorded in the TaskAdded event: camelCase, absent fields left out, no id."""
        return self.model_dump(exclude_none=True, exclude={"id"})


def parse_spec(raw: Mapping[str, Any] | TaskSpec, *, where: str = "") -> TaskSpec:
    """Validate one task's specification; :class:`ValidationError` names the first offending field."""
    if isinstance(raw, TaskSpec):
        return raw
    if not isinstance(raw, Mapping):
        raise ValidationError(where or "task", "a task is a JSON object")
    try:
        return TaskSpec.model_validate(raw)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = _path(err["loc"])
        if where:
            field = f"{where}.{field}" if field else where
        message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "is required"
        raise ValidationError(field, message) from None


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
