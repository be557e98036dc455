"""Run one compile command and append its CPU and wall seconds to a log (ninja's compiler launcher).

    python -m mxfp4lab.flashinfer_build._timed LOG CMD ARGS...

Appends one JSON line ``{"cmd0", "output", "user_s", "sys_s", "wall_s", "rc"}`` to LOG (``output``: the
argument after ``-o``) and exits with the command's status. The CPU seconds are the children's
(``RUSAGE_CHILDREN``): nvcc's own and every tool it runs. Wall much larger than CPU means the unit
waited for a core. Standard library only.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time


def main(argv) -> int:
    log, cmd = argv[0], argv[1:]
    t0 = time.time()
    rc = subprocess.call(cmd)
    wall = time.time() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = cmd[cmd.index("-o") + 1] if "-o" in cmd[:-1] else ""
    rec = {"cmd0": os.path.basename(cmd[0]), "output": os.path.basename(out), "user_s": ru.ru_utime,
           "sys_s": ru.ru_stime, "wall_s": wall, "rc": rc}
    with open(log, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
