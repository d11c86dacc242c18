"""Wire models shared by the client, the API and the runner.

They live in one module so that a field renamed on one side cannot silently
drift from the other: the API, the runner and the CLI all import these.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field
from pydantic import BaseModel as _PydanticModel

from rgrid.requirements import check_requirements


def _utc(value: datetime) -> datetime:
    """SQLite gives times back without their zone; every time rgrid stores
    is UTC, and the wire says so."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class Status(StrEnum):
    """Execution and attempt states; which may follow which: `rgrid.states`."""

    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
# Handed to Ray and not ended: what a node's loss or a lease's end gives back.
OPEN_STATES = frozenset({Status.DISPATCHED, Status.RUNNING})
# Not started anywhere: waiting for a place (Ray may hold a dispatched one).
WAITING_STATES = frozenset({Status.QUEUED, Status.DISPATCHED})
# Not ended, queued included: a batch with one such execution still runs.
UNFINISHED_STATES = frozenset({Status.QUEUED, *OPEN_STATES})


class FailureReason(StrEnum):
    EXIT_CODE = "exit_code"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    # The requirements cannot be met (no such package or version, a build
    # that fails): the user's to fix. dependency_install is the grid's
    # (the index or the network did not answer).
    REQUIREMENTS = "requirements"
    DEPENDENCY_INSTALL = "dependency_install"
    RUNTIME_UNAVAILABLE = "runtime_unavailable"
    OUTPUT_TOO_LARGE = "output_too_large"
    PROCESS_LIMIT = "process_limit"
    # No server the autoscaler may create could ever run it (too big, or a
    # runtime none offers), or, without an autoscaler, no node of the grid
    # fits it; failure_detail says which.
    UNSCHEDULABLE = "unschedulable"
    WORKER_LOST = "worker_lost"
    INTERNAL = "internal"


SHA256_PATTERN = r"^[0-9a-f]{64}$"


class WorkerStatus(StrEnum):
    """A node's life as the control plane sees it: `active` takes work,
    `draining` finishes what it runs, `left` stopped cleanly, `dead` missed
    its heartbeats (its attempts were given to others)."""

    ACTIVE = "active"
    DRAINING = "draining"
    LEFT = "left"
    DEAD = "dead"

    @property
    def live(self) -> bool:
        return self in LIVE_WORKER_STATES


LIVE_WORKER_STATES = (WorkerStatus.ACTIVE, WorkerStatus.DRAINING)


class InstanceState(StrEnum):
    """A server the autoscaler created, from its request to its deletion
    (moves: `rgrid.states.INSTANCE`)."""

    REQUESTED = "requested"
    ALLOCATED = "allocated"
    JOINED = "joined"
    DRAINING = "draining"
    DELETING = "deleting"
    DELETED = "deleted"
    ALLOCATION_FAILED = "allocation_failed"
    JOIN_TIMEOUT = "join_timeout"


# Which of the script's output streams a piece of log belongs to.
Stream = Literal["stdout", "stderr"]


def relative_path(path: str) -> PurePosixPath:
    """The one rule for a path inside a work dir or an output dir, applied by
    the CLI (outputs it downloads), the API (inputs and outputs it records)
    and the runner (files it lays out): relative, non-empty, no `..`, no NUL.
    Raises ValueError; each side maps it to its own error."""
    pure = PurePosixPath(path)
    if "\x00" in path or pure.is_absolute() or not pure.parts or ".." in pure.parts:
        raise ValueError(f"invalid path {path!r}: must be relative and stay inside its folder")
    return pure


def _normal_relative(path: str) -> str:
    return str(relative_path(path))


# The same rule as the schema says it (ECMA-262): not absolute, not only
# dots and slashes, no `..` segment, no NUL.
RELATIVE_PATH_PATTERN = r"^(?!/)(?![./]*$)(?!(.*/)?\.\.(/|$))[^\x00]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"

# A relative path, validated and normalised where a model is parsed.
RelativePath = Annotated[
    str, AfterValidator(_normal_relative), Field(json_schema_extra={"pattern": RELATIVE_PATH_PATTERN})
]

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")


def _job_env(env: dict[str, str]) -> dict[str, str]:
    """A job's --env: shell-style names and values without NUL. Every one
    reaches only the job's own unprivileged process (loader variables such
    as LD_PRELOAD included), never a step that runs with privilege."""
    for key, value in env.items():
        if not ENV_NAME.match(key):
            raise ValueError(f"invalid environment variable name {key!r}")
        if "\x00" in value:
            raise ValueError(f"the value of {key} contains a NUL byte")
    return env


JobEnv = Annotated[
    dict[str, str],
    AfterValidator(_job_env),
    Field(
        json_schema_extra={
            "propertyNames": {"pattern": ENV_NAME.pattern},
            "additionalProperties": {"type": "string", "pattern": NO_NUL_PATTERN},
        }
    ),
]
# The text of a requirements file, with only lines a worker may install
# (rgrid.requirements); installed into a cached environment.
# Which lines may stand is rgrid.requirements' to say (PEP 508, no options,
# no paths), more than a pattern can; the schema promises the plain subset
# that is always accepted: `name`, `name==1.2.3`, each with a comment.
_REQUIREMENT_LINE = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,99}[A-Za-z0-9])?(?:==[0-9]{1,9}(?:\.[0-9]{1,9}){0,5})?(?:[ ]+#[\x20-\x7e]*)?"
REQUIREMENTS_PATTERN = rf"^(?:{_REQUIREMENT_LINE}\n)*(?:{_REQUIREMENT_LINE})?$"
RequirementsText = Annotated[
    str,
    Field(max_length=256 * 1024, json_schema_extra={"pattern": REQUIREMENTS_PATTERN}),
    AfterValidator(check_requirements),
]


# Runtimes: a job asks for one by name; a worker advertises each runtime it
# has to Ray as a custom resource, and every attempt requests its runtime's
# resource, so Ray places it only on a node with that interpreter.
ALLOWED_RUNTIMES = ("python:3.10", "python:3.11", "python:3.12", "python:3.13")
RUNTIME_RESOURCE_PREFIX = "rgrid_runtime_"
# Every node's raylet carries `rgrid_worker_<its worker id>`: the proof that
# a Ray node id belongs to the worker that names it.
WORKER_RESOURCE_PREFIX = "rgrid_worker_"
# Ray needs a positive amount: a node advertises plenty, an attempt takes a sliver.
RUNTIME_ADVERTISED_AMOUNT = 10_000
RUNTIME_REQUESTED_AMOUNT = 0.001


def resource_name(runtime: str) -> str:
    """`python:3.12` -> `rgrid_runtime_python_3_12`."""
    return RUNTIME_RESOURCE_PREFIX + runtime.replace(":", "_").replace(".", "_")


def runtime_of_resource(name: str) -> str | None:
    """The inverse of resource_name; None for any other Ray resource."""
    if not name.startswith(RUNTIME_RESOURCE_PREFIX):
        return None
    family, _, version = name.removeprefix(RUNTIME_RESOURCE_PREFIX).partition("_")
    return f"{family}:{version.replace('_', '.')}"


@dataclass(frozen=True)
class AttemptTicket:
    """What the dispatcher hands Ray for one attempt, and all a runner gets:
    ids, where to call back, and a token valid for this attempt only. The
    spec itself is fetched at start, which is also the fencing check."""

    execution_id: str
    attempt: int
    api_url: str
    token: str


class BaseModel(_PydanticModel):
    """Validators are built on first use, not at import: the CLI imports all
    of these but touches a handful, and start-up time is user-visible."""

    model_config = ConfigDict(defer_build=True)


def _not_a_bool(value: object) -> object:
    """JSON's true is no count (pydantic would read it as 1); 4.0 is 4."""
    if isinstance(value, bool):
        raise ValueError("a count, not true or false")
    return value


ByteCount = Annotated[int, BeforeValidator(_not_a_bool)]


class ObjectSpec(BaseModel):
    """A content-addressed blob the client wants to have on the server."""

    sha256: str = Field(pattern=SHA256_PATTERN)
    size: ByteCount = Field(ge=0)


class UploadPart(BaseModel):
    number: int
    url: str


class UploadTicket(BaseModel):
    """How to upload one missing object: a single PUT or several parts."""

    sha256: str
    size: int
    url: str | None = None
    upload_id: str | None = None
    part_size: int | None = None
    parts: list[UploadPart] = []


class UploadPlan(BaseModel):
    missing: list[UploadTicket]


class UploadPlanRequest(BaseModel):
    objects: list[ObjectSpec]


class CompletedPart(BaseModel):
    number: int
    etag: str


class UploadCompletion(BaseModel):
    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int = Field(ge=0)
    upload_id: str | None = None
    parts: list[CompletedPart] = []


class InputFile(BaseModel):
    """An uploaded object and the relative path it gets in the work dir."""

    sha256: str = Field(pattern=SHA256_PATTERN)
    path: Annotated[RelativePath, Field(min_length=1, max_length=1024)]


class Resources(BaseModel):
    # At least 1 % of a CPU: the least a cgroup enforces and Ray places.
    cpu: float = Field(default=1.0, ge=0.01, le=256)
    memory_mb: int = Field(default=1024, ge=16, le=1024 * 1024)
    timeout_s: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)


class JobSpec(BaseModel):
    """How a job runs: the options of `rgrid run`, the same for one run and
    for each run of a batch. The one place a job option lives: a new one is
    a field here, stored in the execution's column of the same name
    (`rgrid_api.jobspec`), and its flag (`rgrid.cli.run`); everything
    between passes the spec whole."""

    env: JobEnv = {}
    # `python` is the grid's default Python; the API refuses any other name.
    runtime: str = Field(default="python", json_schema_extra={"enum": ["python", *ALLOWED_RUNTIMES]})
    resources: Resources = Field(default_factory=Resources)
    retries: int = Field(default=2, ge=0, le=10)
    requirements: RequirementsText | None = None
    network: bool = True
    # The installer's output in the job's log even when the install works
    # (a failed install always shows it).
    verbose: bool = False
    # Reuse a succeeded execution of the same owner with the same content
    # key instead of running (opt-in: scripts reading the clock, the network
    # or randomness are not pure). Decided at submission: a runner's spec
    # always says False.
    cache: bool = False

    def job(self) -> JobSpec:
        """Only the job's options (of a request that carries more)."""
        return JobSpec(**{name: getattr(self, name) for name in JobSpec.model_fields})


class ExecutionCreate(JobSpec):
    script: InputFile
    args: list[str] = []
    inputs: list[InputFile] = []


class ErrorAnswer(BaseModel):
    """Every error the API answers: `detail` says what went wrong in one
    line, or lists the fields of a request that did not validate."""

    detail: str | list[dict[str, object]]


# One installed distribution of a package set, exactly: `name==version`.
LOCKED_PACKAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}==[A-Za-z0-9][A-Za-z0-9.+!_-]{0,99}$"
LockedPackage = Annotated[str, Field(pattern=LOCKED_PACKAGE_PATTERN)]
MAX_LOCKED_PACKAGES = 5000
# "CPython 3.11.2": one line, no room for anything but a name and a version.
INTERPRETER_PATTERN = r"^[A-Za-z][A-Za-z0-9 .+()_-]{0,127}$"


class Usage(BaseModel):
    """What one attempt used, measured by the kernel in its cgroup (CPU and
    peak memory are unknown on a node without cgroups), as far as it got
    when it was killed."""

    # Finite and bounded: a node's report, never trusted to be sane.
    cpu_seconds: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    peak_memory_bytes: ByteCount | None = Field(default=None, ge=0, le=2**50)
    wall_seconds: float = Field(ge=0, le=1e9, allow_inf_nan=False)
    # Filled by the API from the outputs it verified in storage.
    output_bytes: ByteCount = Field(default=0, ge=0)


class RunnerEnvironment(BaseModel):
    """What exactly an attempt ran with, as its runner found it: the
    interpreter's exact version, every package of its environment, and the
    runner's own rgrid."""

    interpreter: str = Field(pattern=INTERPRETER_PATTERN)
    packages: list[LockedPackage] = Field(default=[], max_length=MAX_LOCKED_PACKAGES)
    rgrid_version: str = Field(max_length=64)


class AttemptView(BaseModel):
    number: int
    status: Status
    worker: str | None = None
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    exit_code: int | None = None
    failure_reason: FailureReason | None = None
    usage: Usage | None = None


class InputRecord(BaseModel):
    """One file a run read, as it was: its place, size and content hash."""

    path: str
    size: int | None = None
    sha256: str


class AttemptRecord(BaseModel):
    """Where one attempt ran and with what."""

    number: int
    # The node's name as its runner gave it, and its registered id (none
    # for a node started outside this control plane).
    worker: str | None = None
    worker_id: str | None = None
    ray_node_id: str | None = None
    interpreter: str | None = None
    rgrid_version: str | None = None


class Provenance(BaseModel):
    """What exactly an execution ran: enough to tell two runs apart and to
    run the same again (`rgrid retry --exact` installs `packages`).
    `packages` and `interpreter` are those of the attempt that decided the
    result (for a cached result, the run it reuses)."""

    script: InputRecord
    inputs: list[InputRecord] = []
    args: list[str] = []
    runtime: str
    requirements: str | None = None
    interpreter: str | None = None
    packages: list[str] | None = None
    attempts: list[AttemptRecord] = []


class ExecutionView(BaseModel):
    id: str
    status: Status
    script: str
    args: list[str]
    runtime: str
    resources: Resources
    created_at: UtcDatetime
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    exit_code: int | None = None
    failure_reason: FailureReason | None = None
    # A sentence for the reasons that need one (unschedulable).
    failure_detail: str | None = None
    duration_s: float | None = None
    # Its share of its nodes' time, in €, once it is final (autoscaled nodes only).
    cost_eur: float | None = None
    retry_of: str | None = None
    batch_id: str | None = None
    cached_from: str | None = None
    # Queued: what it waits for, when something holds it (a cap, a full grid).
    waiting: str | None = None
    attempts: list[AttemptView] = []
    # Only when asked for (`GET /v1/executions/{id}?provenance=true`).
    provenance: Provenance | None = None


class ExecutionList(BaseModel):
    executions: list[ExecutionView]


MAX_BATCH_ITEMS = 100_000
BATCH_ID_PREFIX = "b-"  # no execution id has a dash: one argument names either


def is_batch_id(value: str) -> bool:
    return value.strip().lower().startswith(BATCH_ID_PREFIX)


class BatchItem(BaseModel):
    """One execution of a batch: the input it runs on (as the user named
    it), the files only it gets, and its arguments."""

    input: str = Field(min_length=1, max_length=1024)
    inputs: list[InputFile] = []
    args: list[str] = []


class BatchCreate(JobSpec):
    script: InputFile
    shared: list[InputFile] = []  # files every execution of the batch gets
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)
    # At most this many of the batch dispatched or running at once; none:
    # the grid's capacity is the limit.
    parallel: int | None = Field(default=None, ge=1, le=MAX_BATCH_ITEMS)


class BatchExecution(BaseModel):
    id: str
    input: str
    status: Status
    exit_code: int | None = None
    failure_reason: FailureReason | None = None
    # The execution whose result --cache reused for this input, if any.
    cached_from: str | None = None


class BatchList(BaseModel):
    batches: list[BatchView]


class BatchStatus(StrEnum):
    """Running while any execution is unfinished; then cancelled if the
    batch was cancelled, succeeded only if all succeeded, else failed."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BatchUsage(BaseModel):
    """What a batch's runs used, over the attempts that reported a measure."""

    attempts: int
    cpu_seconds: float
    median_peak_memory_bytes: int | None = None
    max_peak_memory_bytes: int | None = None


class BatchView(BaseModel):
    id: str
    status: BatchStatus
    script: str
    total: int
    parallel: int | None = None
    counts: dict[str, int]
    created_at: UtcDatetime
    finished_at: UtcDatetime | None = None
    executions: list[BatchExecution] = []
    usage: BatchUsage | None = None


class LogChunk(BaseModel):
    seq: int
    attempt: int
    stream: Stream
    data: str


class LogPage(BaseModel):
    """Log chunks after an offset, with the execution's state at that moment.

    `final` is true only when the execution ended and no chunk is left after
    this page, so a follower knows it has seen everything.
    """

    chunks: list[LogChunk]
    next_seq: int
    status: Status
    final: bool


class OutputFile(BaseModel):
    path: str
    size: int
    sha256: str
    url: str | None = None
    # The permission bits the job gave it (a download applies them under
    # the user's umask); None: unknown, the download gets 0666 & ~umask.
    mode: int | None = Field(default=None, ge=0, le=0o777)


class OutputList(BaseModel):
    outputs: list[OutputFile]


class BatchOutputs(BaseModel):
    """Every output of a batch, by execution id, in one answer."""

    outputs: dict[str, list[OutputFile]]


def _finite_amounts(resources: dict[str, float]) -> dict[str, float]:
    """A node's resources are amounts: finite and not negative."""
    if any(not math.isfinite(v) or not 0 <= v <= MAX_RESOURCE_AMOUNT for v in resources.values()):
        raise ValueError(f"resource amounts must be between 0 and {MAX_RESOURCE_AMOUNT:g}")
    return resources


# More than any machine has of anything (memory is counted in MiB).
MAX_RESOURCE_AMOUNT = 1e9
# Ray's node ids: 28 bytes, in hex.
RAY_NODE_ID_PATTERN = r"^[0-9a-f]{56}$"


WORKER_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class WorkerJoin(BaseModel):
    """A node an operator set up asks for a credential of its own, for
    the worker id it proposes."""

    id: str = Field(pattern=WORKER_ID_PATTERN)


RAY_TOKEN_FP_PATTERN = r"^[0-9a-f]{16}$"


class WorkerRegistration(BaseModel):
    id: str = Field(pattern=WORKER_ID_PATTERN)
    host_name: str = Field(max_length=255)
    resources: Annotated[dict[str, float], AfterValidator(_finite_amounts)] = {}
    runtimes: list[str] = []
    sandbox: str = "process"
    provider: str = "local"
    server_id: str | None = None
    pid: int | None = None
    version: str = "0"
    ray_node_id: str | None = Field(default=None, pattern=RAY_NODE_ID_PATTERN)
    # A head node's GCS address (host:port), as the cluster's other nodes reach it.
    ray_address: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-]{1,253}:\d{1,5}$")
    # The fingerprint of the Ray token its raylet runs with.
    ray_token_fp: str | None = Field(default=None, pattern=RAY_TOKEN_FP_PATTERN)


def ray_token_fingerprint(token: str) -> str:
    """Names a Ray token without giving it away, so that answers to nodes
    can say which token the grid is on (only nodes, which hold it anyway,
    are told)."""
    return hashlib.sha256(token.strip().encode()).hexdigest()[:16]


class RayTokenGrant(BaseModel):
    """The grid's Ray token in force, for a node whose raylet runs with
    another (`rgrid server rotate-ray-token`)."""

    token: str


class WorkerGrant(BaseModel):
    """What a node's agent gets for its bootstrap token (a provisioned
    node: then with the grid's Ray token, which may not sit in user data)
    or for the worker token (a node an operator set up, which has the Ray
    token already): the worker id it is bound to and its own credential."""

    worker_id: str
    credential: str
    ray_token: str | None = None


class WorkerAck(BaseModel):
    """The worker's status as the control plane sees it, and where the Ray
    head is now. A worker told it is `dead` must restart its node afresh (its
    attempts were given to others); one whose raylet joined another head
    address must rejoin at `ray_address`."""

    status: WorkerStatus
    ray_address: str | None = None
    # The Ray token in force (its fingerprint): a node on another fetches it
    # and restarts its raylet with it.
    ray_token_fp: str | None = None


class WorkerView(BaseModel):
    id: str
    host_name: str
    status: WorkerStatus
    heartbeat_age_s: float | None
    running: int
    runtimes: list[str]
    sandbox: str
    provider: str
    server_id: str | None = None
    pid: int | None = None
    ray_node_id: str | None = None
    started_at: UtcDatetime
    # Autoscaled nodes: what the provider calls the server's type, and its price.
    server_type: str | None = None
    price_eur_per_hour: float | None = None


class WorkerList(BaseModel):
    workers: list[WorkerView]


class Role(StrEnum):
    """What an API key may see and do. A user sees its own runs, its own
    cost and the grid's capacity as counts; an admin also sees the nodes,
    the autoscaler and everyone's cost, and may cancel and drain anything."""

    USER = "user"
    ADMIN = "admin"


class GridCapacity(BaseModel):
    """The grid as every key may see it: counts, never whose work it is."""

    role: Role  # the caller's own
    nodes: int
    cpus: float
    free_cpus: float
    queued: int
    running: int


class Health(BaseModel):
    status: str
    version: str


# Runner <-> API. Every runner call is fenced by (execution_id, attempt).


class RunnerStart(BaseModel):
    worker: str = Field(max_length=255)
    worker_id: str | None = Field(default=None, pattern=WORKER_ID_PATTERN)
    ray_node_id: str | None = Field(default=None, pattern=RAY_NODE_ID_PATTERN)


class RunnerFile(BaseModel):
    """One file of a spec. The root runner names files and paths after
    these, so they are checked here too, not only when the API accepted
    them: a spec is data from the network."""

    path: Annotated[RelativePath, Field(min_length=1, max_length=1024)]
    url: str = Field(max_length=16384)  # fetched by httpx: http and https only
    sha256: str = Field(pattern=SHA256_PATTERN)  # the input cache is keyed by it, and checks it


class RunnerSpec(JobSpec):
    """Everything a runner needs to execute one attempt, with fresh URLs;
    `runtime` is the resolved one (`python:3.11`)."""

    execution_id: str = Field(pattern=r"^[0-9a-z]{4,32}$")
    attempt: int = Field(ge=1)
    script: RunnerFile
    inputs: list[RunnerFile]
    args: list[str]


class RunnerLogLine(BaseModel):
    stream: Stream
    data: str


class RunnerLogBatch(BaseModel):
    lines: list[RunnerLogLine]


class RunnerAck(BaseModel):
    """Answer to every runner write: `cancel` asks the runner to stop."""

    cancel: bool = False


# The most outputs one attempt reports (a node's own cap, RGRID_MAX_OUTPUT_FILES,
# is 10,000 unless raised): the API asks storage of each.
MAX_OUTPUT_FILES = 100_000


class RunnerOutputRequest(BaseModel):
    paths: list[RelativePath] = Field(max_length=MAX_OUTPUT_FILES)


class RunnerOutputUrls(BaseModel):
    urls: dict[str, str]


class RunnerResult(BaseModel):
    exit_code: int | None
    failure_reason: FailureReason | None = None
    duration_s: float
    outputs: list[OutputFile] = Field(default=[], max_length=MAX_OUTPUT_FILES)
    # Output the log shipper had not sent yet (all of a short job's).
    logs: list[RunnerLogLine] = []
    usage: Usage | None = None
    environment: RunnerEnvironment | None = None


class NodeCost(BaseModel):
    name: str
    provider: str
    server_type: str
    state: str
    price_eur_per_hour: float
    hours: float
    eur: float


class CostReport(BaseModel):
    """Node-hours and € per autoscaled node since `since`; the caller's
    executions' share of them; and what no execution used (idle)."""

    since: UtcDatetime
    executions_eur: float
    attempts: int
    # An admin's report only: the grid's nodes, what they cost, what no
    # execution used, and each owner's share.
    nodes: list[NodeCost] = []
    node_hours: float | None = None
    nodes_eur: float | None = None
    idle_eur: float | None = None
    owners_eur: dict[str, float] | None = None


class EstimateRequest(BaseModel):
    """What `rgrid estimate` asks about: a script (by content, else by
    name) run with this many CPUs."""

    script_sha256: str = Field(pattern=SHA256_PATTERN)
    script_name: str = Field(max_length=1024)
    cpu: float = Field(1.0, gt=0, le=1024)


class Estimate(BaseModel):
    """A run's likely duration and cost, from the owner's history of the script."""

    runs: int
    basis: str
    median_s: float | None = None
    p90_s: float | None = None
    cost_eur: float | None = None
    # What the runs used (the CPUs they kept busy at the 90th percentile,
    # their largest peak) and what that says to ask for; None without
    # measured runs.
    busy_cpus: float | None = None
    peak_memory_bytes: int | None = None
    suggested_cpu: float | None = None
    suggested_memory_mb: int | None = None


class InstanceView(BaseModel):
    name: str
    state: InstanceState
    provider: str
    server_type: str
    location: str
    price_eur_per_hour: float
    age_s: float
    reason: str | None = None


class AutoscalerStatus(BaseModel):
    """What the active autoscaler last concluded, and why it is not scaling
    now (`blocked`: budget, max nodes, backoff, a disabled provider...)."""

    provider: str
    active: bool
    report_age_s: float | None = None
    caps: dict[str, float | int | None] = {}
    spend_eur_per_hour: float = 0.0
    demand: int = 0
    unmet: int = 0
    blocked: list[str] = []
    backoff: dict[str, float] = {}
    nodes: list[InstanceView] = []


class ConsoleLink(BaseModel):
    """A one-time login link to the web console (`rgrid console`): the
    path to open on the API's own address, usable once within
    `expires_in_s` seconds."""

    path: str
    expires_in_s: float
