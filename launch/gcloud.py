"""The gcloud command lines of a launch, as argument lists (pure functions; nothing here runs them).

`gcloud compute tpus tpu-vm create|ssh|scp|describe|delete` for a node, `gcloud compute tpus queued-resources
create|describe|delete` for a queued request. `--worker=all` runs an ssh command on every worker at once. A
multislice job (`node_count > 1`, only as a queued resource: `--node-count` slices named `NAME-0`, `NAME-1`, ...)
is reached through `gcloud compute tpus queued-resources ssh|scp --node=all --worker=all`.
"""
import shlex
from typing import Sequence

from .slices import LaunchError, Network, TpuSlice

GCLOUD = "gcloud"
NO_NETWORK = Network()


def _tpu_vm(verb: str, tpu: TpuSlice, *rest: str) -> list[str]:
  return [GCLOUD, "compute", "tpus", "tpu-vm", verb, *rest[:1], *tpu.location_flags(), *rest[1:]]


def create_command(tpu: TpuSlice, *, spot: bool = False, preemptible: bool = False,
                   network: Network = NO_NETWORK) -> list[str]:
  """`gcloud compute tpus tpu-vm create`; Spot or (v4 only) preemptible capacity on request."""
  if tpu.multislice:
    raise LaunchError(f"--node_count={tpu.node_count}: a multislice job can only be requested as a queued resource "
                      "(queued-create, or supervise)")
  if spot and preemptible:
    raise LaunchError("choose one of --spot and --preemptible (Spot VMs supersede preemptible ones)")
  if preemptible and tpu.generation != "v4":
    raise LaunchError(f"preemptible TPUs are not offered for {tpu.generation}; use --spot")
  capacity = ["--spot"] if spot else ["--preemptible"] if preemptible else []
  return _tpu_vm("create", tpu, tpu.name, f"--accelerator-type={tpu.accelerator_type}",
                 f"--version={tpu.runtime_version}", *capacity, *network.create_flags())


def ssh_command(tpu: TpuSlice, remote_command: str, worker: str = "all",
                network: Network = NO_NETWORK) -> list[str]:
  """Runs a shell command on one worker or on all of them at once (`--worker=all`; multislice: of every slice)."""
  if tpu.multislice:
    return _queued("ssh", tpu, "--node=all", f"--worker={worker}", *network.ssh_flags(),
                   f"--command={remote_command}")
  return _tpu_vm("ssh", tpu, tpu.name, f"--worker={worker}", *network.ssh_flags(), f"--command={remote_command}")


def scp_command(tpu: TpuSlice, sources: Sequence[str], destination: str, worker: str = "all",
                network: Network = NO_NETWORK) -> list[str]:
  """Copies local files or folders to `destination` (relative to the home folder) on the workers."""
  if tpu.multislice:
    return [GCLOUD, "compute", "tpus", "queued-resources", "scp", *sources, f"{tpu.queued_resource}:{destination}",
            *tpu.location_flags(), "--node=all", f"--worker={worker}", *network.ssh_flags(), "--recurse"]
  return [GCLOUD, "compute", "tpus", "tpu-vm", "scp", *sources, f"{tpu.name}:{destination}",
          *tpu.location_flags(), f"--worker={worker}", *network.ssh_flags(), "--recurse"]


def describe_command(tpu: TpuSlice, *fields: str) -> list[str]:
  """The node's description (`fields`: only those, as `--format=value(...)`); multislice: the request's."""
  if tpu.multislice:
    return _queued("describe", tpu, *([f"--format=value({','.join(fields)})"] if fields else []))
  return _tpu_vm("describe", tpu, tpu.name, *([f"--format=value({','.join(fields)})"] if fields else []))


def delete_command(tpu: TpuSlice) -> list[str]:
  if tpu.multislice:
    raise LaunchError(f"--node_count={tpu.node_count}: the slices of a multislice job are deleted with their "
                      "request (queued-delete)")
  return _tpu_vm("delete", tpu, tpu.name, "--quiet")


def _queued(verb: str, tpu: TpuSlice, *rest: str) -> list[str]:
  return [GCLOUD, "compute", "tpus", "queued-resources", verb, tpu.queued_resource, *tpu.location_flags(), *rest]


def queued_create_command(tpu: TpuSlice, *, spot: bool = False, valid_until_duration: str = "",
                          network: Network = NO_NETWORK) -> list[str]:
  """Requests the slice as a queued resource (node id = `tpu.name`; multislice: `node_count` nodes named
  `tpu.name-0`, ...); it is created once capacity exists."""
  nodes = [f"--node-count={tpu.node_count}", f"--node-prefix={tpu.name}"] if tpu.multislice else \
      [f"--node-id={tpu.name}"]
  extra = (["--spot"] if spot else []) + ([f"--valid-until-duration={valid_until_duration}"]
                                          if valid_until_duration else [])
  return _queued("create", tpu, *nodes, f"--accelerator-type={tpu.accelerator_type}",
                 f"--runtime-version={tpu.runtime_version}", *extra, *network.create_flags())


def queued_describe_command(tpu: TpuSlice, *, state_only: bool = False) -> list[str]:
  """The request's description; `state_only`: just its state (WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE,
  SUSPENDING, SUSPENDED, FAILED, ...)."""
  return _queued("describe", tpu, *(["--format=value(state.state)"] if state_only else []))


def queued_delete_command(tpu: TpuSlice) -> list[str]:
  """Deletes the request and (`--force`) the nodes it provisioned."""
  return _queued("delete", tpu, "--force", "--quiet")


def format_commands(commands: Sequence[Sequence[str]]) -> str:
  """One shell-quoted command per line (a runnable script)."""
  return "\n".join(shlex.join(c) for c in commands)
