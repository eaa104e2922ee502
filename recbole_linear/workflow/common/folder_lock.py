"""One command at a time per output folder: ``compare`` and ``tune`` hold ``<folder>/.recbole_linear.lock``.

The lock is an exclusive ``flock`` on that file, which the kernel drops when the holding process
dies, however it dies (``kill -9`` included): a lock left behind by a dead command is therefore
taken over, never waited for. The file records who holds it (pid, host name, start time, command)
so that a refused command can say who is using the folder; the holder deletes it on a clean exit,
and a command that finds the file still filled in after taking the lock says whose stale lock it
took over.

Where ``flock`` is not available (no ``fcntl``, or a file system that refuses locks), the pid and
host name decide: the lock is stale when its host is this machine and its pid is not running.
"""
import json
import os
import socket
import sys
import time

from recbole_linear.errors import RecBoleLinearError

LOCK_NAME = ".recbole_linear.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class FolderLockedError(RecBoleLinearError):
    """Another live command works in the same output folder."""


def _holder_text(holder):
    if not holder:
        return "another command"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')}"
        + (f": {holder['command']}" if holder.get("command") else "") + ")"
    )


def _pid_running(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # someone else's live process, or nothing we can judge: assume it runs
    return True


def _short_command(argv=None):
    text = " ".join(argv if argv is not None else [os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])
    return text if len(text) <= 200 else text[:199] + "…"


class FolderLock:
    """``with FolderLock(folder, "compare"):`` or ``acquire()`` / ``release()``.

    ``acquire`` raises :class:`FolderLockedError` (one line: the folder and its holder) when a live
    process holds the folder; ``warn`` gets one line when a dead holder's lock is taken over.
    """

    def __init__(self, folder, purpose, warn=None):
        self.folder = folder
        self.purpose = purpose
        self.path = os.path.join(folder, LOCK_NAME)
        # one line on stderr, prefixed once: 'compare: warning: taking over ...'
        self.warn = warn or (lambda line: print(f"{purpose}: warning: {line}", file=sys.stderr, flush=True))
        self._file = None

    # --- the lock
    def acquire(self):
        os.makedirs(self.folder, exist_ok=True)
        while True:
            lock_file = open(self.path, "a+", encoding="utf-8")
            try:
                locked = self._try_flock(lock_file)
                previous = self._read(lock_file)
                for _ in range(20):  # a holder that has just locked writes its name a moment later
                    if locked is not False or previous:
                        break
                    time.sleep(0.05)
                    previous = self._read(lock_file)
                if locked is False or (locked is None and self._held_elsewhere(previous)):
                    raise FolderLockedError(
                        f"output folder '{self.folder}' is in use by {_holder_text(previous)}; wait for it to "
                        f"finish or use another --output_dir (if no such process runs, delete {self.path})"
                    )
                if not self._same_file(lock_file):  # its holder deleted it meanwhile: lock the new one
                    lock_file.close()
                    continue
            except BaseException:
                lock_file.close()
                raise
            break
        if previous and int(previous.get("pid", -1)) != os.getpid():
            self.warn(f"taking over the stale lock of {_holder_text(previous)} on '{self.folder}'")
        self._file = lock_file
        self._write_holder()
        return self

    def release(self):
        if self._file is None:
            return
        try:
            if self._same_file(self._file):
                os.remove(self.path)  # while still locked: the next command creates a fresh file
        except OSError:
            pass
        finally:
            self._file.close()  # drops the flock
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False

    # --- helpers
    @staticmethod
    def _try_flock(lock_file):
        """True: locked; False: a live process holds it; None: this file system has no flock."""
        if fcntl is None:
            return None
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:  # ENOLCK, EOPNOTSUPP...: fall back on the recorded pid
            return None

    @staticmethod
    def _held_elsewhere(holder):
        if not holder:
            return False
        if holder.get("host") != socket.gethostname():
            return True  # cannot see another machine's processes: trust its lock
        return int(holder.get("pid", -1)) != os.getpid() and _pid_running(holder.get("pid"))

    @staticmethod
    def _read(lock_file):
        lock_file.seek(0)
        text = lock_file.read().strip()
        if not text:
            return None
        try:
            holder = json.loads(text)
        except ValueError:
            return {"pid": -1, "host": "?", "started": "?", "command": "unreadable lock file"}
        return holder if isinstance(holder, dict) else None

    def _same_file(self, lock_file):
        try:
            return os.stat(self.path).st_ino == os.fstat(lock_file.fileno()).st_ino
        except OSError:
            return False

    def _write_holder(self):
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": _short_command(),
            "purpose": self.purpose,
        }
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(holder) + "\n")
        self._file.flush()
