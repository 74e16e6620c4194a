"""The launcher's command-line flags (absl) and the `LaunchOptions` they make."""
from .slices import Network
from .supervisor import SuperviseOptions
from .tpu_vm import COMMANDS, LaunchOptions

DEFAULTS = LaunchOptions()  # The flags' defaults are the options' own.


def define_flags(flags) -> None:
  flags.DEFINE_string("name", None, "TPU VM (node) name.")
  flags.DEFINE_string("zone", None, "Zone, e.g. us-central2-b (v4), us-west4-a (v5litepod).")
  flags.DEFINE_string("project", "", "Project id; empty = gcloud's configured core/project.")
  flags.DEFINE_string("accelerator_type", "v4-8", "v4-N, v5p-N (TensorCores) or v5litepod-N, v6e-N (chips).")
  flags.DEFINE_string("runtime_version", "", "TPU software version; empty = a default for the generation.")
  flags.DEFINE_bool("spot", False, "Spot capacity (create, queued-create): cheaper, can be preempted.")
  flags.DEFINE_bool("preemptible", False, "Preemptible capacity (create; v4 only).")
  flags.DEFINE_bool("internal_ips", False, "create: workers without external IPs; ssh/scp over the internal IP "
                    "(run the launcher inside the VPC or through IAP).")
  flags.DEFINE_string("network", "", "create: VPC network of the workers.")
  flags.DEFINE_string("subnetwork", "", "create: subnetwork of the workers.")
  flags.DEFINE_string("service_account", "", "create: service account of the workers (their GCS access).")
  flags.DEFINE_list("scopes", [], "create: OAuth scopes of that service account.")
  flags.DEFINE_string("git_url", "", "setup: install from this git repository...")
  flags.DEFINE_string("git_ref", "", "...at this commit (default: the commit of the checkout the launcher runs "
                      "from), tag or branch.")
  flags.DEFINE_string("sdist", "", "setup: or install this local sdist/wheel (copied to every worker).")
  flags.DEFINE_list("copy_gin", [], "setup: local gin files/folders copied to ~/xprompt_gin on every worker.")
  flags.DEFINE_multi_string("gin_file", [], "run: gin files (shipped names like recipes/lester.gin, or copied).")
  flags.DEFINE_multi_string("gin_bindings", [], "run: NAME=VALUE gin bindings; `--gin.NAME=VALUE` works too.")
  flags.DEFINE_enum("command", DEFAULTS.command, COMMANDS,
                    "run: the xprompt-jax command the workers run (`table`: a whole paper table, --model_dir being "
                    "its --results_dir; give --train_flag=--table=NAME).")
  flags.DEFINE_string("model_dir", "", "run: gs:// folder for checkpoints, summaries and the workers' logs.")
  flags.DEFINE_multi_string("train_flag", [], "run: extra flag passed verbatim to the command on the workers.")
  flags.DEFINE_multi_string("env", [], "run: NAME=VALUE environment variable for the command (repeatable).")
  flags.DEFINE_string("run_id", "", "run: names the workers' logs (~/xprompt_logs/RUN_ID.workerN.log, copied to "
                      "MODEL_DIR/logs/); default: the launch time. logs: whose logs (default: the newest).")
  flags.DEFINE_string("worker", DEFAULTS.worker, "logs: `all` or one worker's index.")
  flags.DEFINE_integer("lines", DEFAULTS.lines, "logs: lines of each log to print.")
  flags.DEFINE_integer("follow_s", DEFAULTS.follow_s, "logs: keep following for this many seconds, then return "
                       "(0: print and return).")
  flags.DEFINE_integer("stop_wait_s", DEFAULTS.stop_wait_s, "stop: seconds to wait after SIGTERM (the checkpoint "
                       "save) before SIGKILL.")
  flags.DEFINE_string("python", DEFAULTS.python, "Python interpreter on the workers (setup's venv).")
  flags.DEFINE_integer("node_count", 1, "Slices of --accelerator_type in one multislice job (queued resources "
                       "only; the mesh then needs --gin.MeshConfig.dcn_data=N).")
  flags.DEFINE_string("queued_id", "", "queued-*, supervise: queued-resource id; empty = NAME-qr.")
  sup = SuperviseOptions()
  flags.DEFINE_float("poll_s", sup.poll_s, "queued-wait, supervise: seconds between two looks at the request/job.")
  flags.DEFINE_float("wait_s", sup.wait_s, "queued-wait, supervise: longest wait for the request to be ACTIVE.")
  flags.DEFINE_integer("max_restarts", sup.max_restarts, "supervise: resubmissions after preemptions before "
                       "giving up.")
  flags.DEFINE_bool("keep_when_done", sup.keep_when_done, "supervise: keep the slice when the job has finished "
                    "(default: queued-delete it).")
  flags.DEFINE_string("valid_until_duration", "", "queued-create: give up after this long, e.g. 6h.")
  flags.DEFINE_integer("attempts", 5, "Attempts of each ssh/scp/describe command before the launch fails.")
  flags.DEFINE_float("retry_base_s", 5.0, "Seconds before the first retry; doubled each time, at most 60.")
  flags.DEFINE_bool("keep_on_failure", False, "Keep a slice this launch created when a later step fails (default: "
                    "delete it, so that it does not keep billing).")
  flags.DEFINE_bool("dry_run", False, "Print the gcloud commands (one per line) instead of running them.")
  flags.mark_flags_as_required(["name", "zone"])


def options_from_flags(f, default_run_id: str) -> LaunchOptions:
  network = Network(internal_ips=f.internal_ips, network=f.network, subnetwork=f.subnetwork,
                    service_account=f.service_account, scopes=tuple(f.scopes))
  return LaunchOptions(
      spot=f.spot, preemptible=f.preemptible, git_url=f.git_url, git_ref=f.git_ref, sdist=f.sdist,
      copy_gin=tuple(f.copy_gin), gin_files=tuple(f.gin_file), model_dir=f.model_dir,
      gin_bindings=tuple(f.gin_bindings), extra_train_flags=tuple(f.train_flag), python=f.python,
      env=tuple(f.env), valid_until_duration=f.valid_until_duration, command=f.command,
      network=network, run_id=f.run_id or default_run_id, log_run_id=f.run_id, worker=f.worker, lines=f.lines,
      follow_s=f.follow_s, stop_wait_s=f.stop_wait_s,
      supervision=SuperviseOptions(poll_s=f.poll_s, wait_s=f.wait_s, max_restarts=f.max_restarts,
                                   keep_when_done=f.keep_when_done, keep_on_failure=f.keep_on_failure))
