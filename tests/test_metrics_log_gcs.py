"""A gs:// model_dir keeps metrics.jsonl in the bucket: every row rewrites the object (GCS cannot append), a resumed
run keeps the earlier rows, and the readers (`plotting.read_metrics`) read it back. GCS is replaced by a dict."""
import jax

from xprompt_jax import plotting
from xprompt_jax.checkpoints import storage
from xprompt_jax.training import metrics_log


def test_metrics_log_on_gcs_rewrites_the_object_and_resumes(monkeypatch):
  bucket = {}
  monkeypatch.setattr(storage, "is_file", lambda p: p in bucket if p.startswith("gs://") else False)
  monkeypatch.setattr(storage, "read_bytes", lambda p: bucket[p])
  monkeypatch.setattr(storage, "write_bytes", lambda p, data: bucket.__setitem__(p, data))
  monkeypatch.setattr(jax, "process_index", lambda: 0)

  class Writer:
    def __init__(self, folder):
      assert folder == "gs://b/run/tb"

    def write_scalars(self, step, scalars):
      pass

    flush = close = lambda self: None

  from clu import metric_writers
  monkeypatch.setattr(metric_writers, "SummaryWriter", Writer)
  log = metrics_log.MetricsLog("gs://b/run")
  log.write(1, "train", {"loss": 2.0})
  log.write(2, "eval", {"t/accuracy": 50.0})
  assert bucket["gs://b/run/metrics.jsonl"].decode().count("\n") == 2
  resumed = metrics_log.MetricsLog("gs://b/run", resume_step=2)
  resumed.write(3, "train", {"loss": 1.0})
  assert [r["step"] for r in plotting.read_metrics("gs://b/run")] == [1, 2, 3]
