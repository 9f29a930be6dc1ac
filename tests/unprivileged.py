"""Running a command so that file permissions bind it, even when the tests run as root."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile

#: setpriv arguments that drop the two capabilities letting root read any file or folder.
_NO_DAC = "-dac_override,-dac_read_search"
_SETPRIV = ["--inh-caps", _NO_DAC, "--ambient-caps", _NO_DAC, "--bounding-set", _NO_DAC]


@functools.cache
def unprivileged_prefix() -> list[str] | None:
    """A command prefix under which a ``chmod 000`` file cannot be opened, or None if there is none.

    ``[]`` for a normal user; for root, ``setpriv`` without the capabilities that bypass permissions. Checked by
    trying, so a test using it never passes because the file happened to be readable.
    """
    setpriv = shutil.which("setpriv")
    candidates = [[]] if os.geteuid() != 0 else [[setpriv, *_SETPRIV]] if setpriv else []
    with tempfile.TemporaryDirectory() as tmp:
        secret = os.path.join(tmp, "secret")
        with open(secret, "w") as fh:
            fh.write("x")
        os.chmod(secret, 0)
        for prefix in candidates:
            probe = subprocess.run([*prefix, sys.executable, "-c", f"open({secret!r})"], capture_output=True,
                                   timeout=60)
            if probe.returncode != 0 and b"PermissionError" in probe.stderr:
                return prefix
    return None
