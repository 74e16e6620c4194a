"""Which TPU slice: generation and size from `--accelerator_type`, the default runtime image per generation, the
node's name/zone/project and its network options, and how many chips each worker (host) of the slice has."""
import dataclasses
import re

class LaunchError(RuntimeError):
  """A launch that cannot proceed: bad option, missing gcloud, or a failed gcloud command."""


# TPU software (runtime) version per generation: the VM image with the TPU driver; JAX comes from pip.
DEFAULT_RUNTIME_VERSIONS = {
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
# The number after the dash counts TensorCores on v4/v5p (multiples of 8: 4 chips x 2 cores per host) and chips on
# v5e/v6e (the published slice shapes).
_CORE_COUNTED = {"v4": 4096, "v5p": 12288}
_CHIP_COUNTED = {"v5litepod": (1, 4, 8, 16, 32, 64, 128, 256), "v6e": (1, 4, 8, 16, 32, 64, 128, 256)}
_ALIASES = {"v5e": "v5litepod", "v5lite": "v5litepod", "v5litepod": "v5litepod"}
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def parse_accelerator_type(accelerator_type: str) -> tuple[str, int]:
  """('v4', 128) from 'v4-128'; a clear error for unknown generations or slice sizes."""
  supported = (", ".join(f"{g}-N (N a multiple of 8 up to {m})" for g, m in _CORE_COUNTED.items()) + ", "
               + ", ".join(f"{g}-{{{','.join(map(str, s))}}}" for g, s in _CHIP_COUNTED.items()))
  m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator_type or "")
  if not m:
    raise LaunchError(f"accelerator type {accelerator_type!r} is not of the form GENERATION-SIZE; supported: "
                      f"{supported}")
  generation, size = m.group(1), int(m.group(2))
  if generation in _ALIASES and generation != _ALIASES[generation]:
    raise LaunchError(f"accelerator type {accelerator_type!r}: gcloud calls this generation "
                      f"{_ALIASES[generation]!r}; use {_ALIASES[generation]}-{size}")
  if generation in _CORE_COUNTED:
    if size % 8 or not 8 <= size <= _CORE_COUNTED[generation]:
      raise LaunchError(f"accelerator type {accelerator_type!r}: {generation} sizes count TensorCores and must be "
                        f"a multiple of 8 between 8 and {_CORE_COUNTED[generation]}")
  elif generation in _CHIP_COUNTED:
    if size not in _CHIP_COUNTED[generation]:
      raise LaunchError(f"accelerator type {accelerator_type!r}: {generation} slices have "
                        f"{', '.join(map(str, _CHIP_COUNTED[generation]))} chips")
  else:
    raise LaunchError(f"accelerator type {accelerator_type!r}: generation {generation!r} is not supported; "
                      f"supported: {supported}")
  return generation, size


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  """Which slice: node name, zone, accelerator type; project and runtime version default to gcloud's / ours."""

  name: str
  zone: str
  accelerator_type: str = "v4-8"
  project: str = ""
  runtime_version: str = ""
  node_count: int = 1  # > 1: a multislice job, that many slices of `accelerator_type` joined over the DCN.
  queued_id: str = ""  # The queued-resource request's id ('': NAME-qr).

  def __post_init__(self):
    if not _NAME.match(self.name or ""):
      raise LaunchError(f"TPU name {self.name!r} must be 1-63 lowercase letters, digits or '-', starting with a "
                        "letter and not ending with '-'")
    if not isinstance(self.node_count, int) or self.node_count < 1:
      raise LaunchError(f"--node_count={self.node_count!r} must be a positive number of slices")
    if not self.zone:
      raise LaunchError("a zone is required (e.g. --zone=us-central2-b for v4, us-west4-a for v5litepod)")
    generation, _ = parse_accelerator_type(self.accelerator_type)
    if not self.runtime_version:
      object.__setattr__(self, "runtime_version", DEFAULT_RUNTIME_VERSIONS[generation])

  @property
  def queued_resource(self) -> str:
    return self.queued_id or f"{self.name}-qr"

  @property
  def multislice(self) -> bool:
    return self.node_count > 1

  @property
  def generation(self) -> str:
    return parse_accelerator_type(self.accelerator_type)[0]

  def location_flags(self) -> list[str]:
    return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

  @property
  def chips(self) -> int:
    generation, size = parse_accelerator_type(self.accelerator_type)
    return size // 2 if generation in _CORE_COUNTED else size  # v4/v5p: 2 TensorCores a chip.

  @property
  def chips_per_host(self) -> int:
    """What `jax.local_device_count()` must be on every worker: 4 chips a host, or the whole slice when it is one
    host (v5e / v6e up to 8 chips)."""
    single_host = 8 if self.generation in _CHIP_COUNTED else 4
    return self.chips if self.chips <= single_host else 4

  @property
  def hosts(self) -> int:
    """Workers of one slice (a multislice job has `node_count` times as many)."""
    return self.chips // self.chips_per_host


@dataclasses.dataclass(frozen=True)
class Network:
  """VPC options of `create` / `queued-create` (and `--internal-ip` for ssh/scp from inside the VPC): a project
  whose policy forbids external IPs, a shared VPC, or a service account for the workers' GCS access."""

  internal_ips: bool = False
  network: str = ""
  subnetwork: str = ""
  service_account: str = ""
  scopes: tuple[str, ...] = ()

  def create_flags(self) -> list[str]:
    return ([f"--network={self.network}"] if self.network else []) + \
        ([f"--subnetwork={self.subnetwork}"] if self.subnetwork else []) + \
        (["--internal-ips"] if self.internal_ips else []) + \
        ([f"--service-account={self.service_account}"] if self.service_account else []) + \
        ([f"--scopes={','.join(self.scopes)}"] if self.scopes else [])

  def ssh_flags(self) -> list[str]:
    return ["--internal-ip"] if self.internal_ips else []
