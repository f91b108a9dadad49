"""train.py with one process of a torchrun launch made to fail in the middle of its fit, for the
fault tests (the library has no test hook: this patches it before train.py starts).

    torchrun --nproc-per-node=2 tests/support/distributed_fault.py <kill|raise> <rank> [train.py overrides]

``kill``: the process SIGKILLs itself (as the out-of-memory killer would); ``raise``: it raises
a ValueError. Either happens when its K-SVD starts; the time is written to $FAULT_TIME_FILE.
"""
import os
import runpy
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODE, VICTIM = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]

from gpuksvd.detector import model as detector_model  # noqa: E402

fit = detector_model.LocationModel.fit


def failing_fit(self, *args, **kwargs):
    if int(os.environ.get("RANK", "0")) == VICTIM:
        Path(os.environ["FAULT_TIME_FILE"]).write_text(str(time.time()))
        if MODE == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise ValueError(f"planted failure in the fit of rank {VICTIM}")
    return fit(self, *args, **kwargs)


detector_model.LocationModel.fit = failing_fit

runpy.run_path(str(ROOT / "train.py"), run_name="__main__")  # as `python train.py` (Hydra finds conf/)
