"""torchrun for `minimind train --nproc N`, saying how a job ended in one line instead of a traceback.

PyTorch's launcher (torch.distributed.run) ends a job whose process failed with its own error log
lines and a ChildFailedError traceback of some 40 lines, and exit code 1 whatever the process's own
code was. Here the same launcher runs, and a failure ends with the failing process's exit code (2 for
bad input, as a single process exits) and, where that process could not say why itself (killed by a
signal, or failed on another local rank than the one that prints), one line that does.

    python -m minimind.engine.launcher <torchrun arguments>
"""

from __future__ import annotations

import logging
import signal
import sys

from ..options import EXIT_FAILED


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # its agent logs each failure (and each process it stops) on its own: the line below says it once
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        said = [f for f in e.failures.values() if f.local_rank == 0 and f.exitcode > 0]  # printed its own error
        if failure.exitcode < 0:
            name = signal.Signals(-failure.exitcode).name if -failure.exitcode in signal.valid_signals() else \
                f"signal {-failure.exitcode}"
            print(f"error: training process rank {rank} was killed ({name}); the others were stopped. The last "
                  "resume state is intact: `minimind runs list` shows the run, `minimind train --resume RUN` "
                  "continues it", file=sys.stderr)
            return EXIT_FAILED
        if not said:
            print(f"error: training process rank {rank} failed (exit code {failure.exitcode}); the others were "
                  "stopped", file=sys.stderr)
        return failure.exitcode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
