"""Running the documentation's examples (tests/test_docs.py): collect, rewrite for tiny data, run fast.

Every ```bash and ```python block of README.md and docs/**/*.md runs, unless the line before it is
``<!-- not-run: REASON -->``. The blocks of one page run in order, as one bash script, in one fresh
folder holding a copy of examples/, with the tiny synthetic MNIST as the data and training made
short (``--iters`` rewritten, RNNMNIST_TRAIN_ITERS set). Each command must exit 0, or the code a
trailing ``# exits N`` comment names.

Speed: starting Python and importing torch costs seconds a command, so ``rnnmnist`` on the
script's PATH is a small shim that hands its arguments, environment, folder and standard streams
(the file descriptors themselves) to a fork server: a process that imported torch and rnnmnist
once and forks a child per command, which runs the real ``rnnmnist.cli.main.main``. ```python blocks
run the same way. The server forks before computing anything, so no thread pool is copied.

Imports only the standard library at the top: the shim runs this file without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import struct
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_LANGS = ("bash", "python")
SHELL_LANGS = ("sh", "shell", "console", "zsh", "shell-session")  # write ```bash, which the test runs
NOT_RUN = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")
EXITS = re.compile(r"#\s*exits\s+(\d+)\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
# A block with these runs as one unit (its status checked once): it cannot be cut into lines.
COMPOUND = re.compile(r"<<[^<]|^\s*(for|while|until|if|case|function)\b|\{\s*$|\(\)\s*\{", re.MULTILINE)

SHORT_ITERS = 512  # 1 step of the default batch of 256: every training example trains, briefly
SHORT_TRIALS = 2


@dataclass
class Block:
    page: str  # path relative to the repository
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    not_run: str | None = None  # the reason, when marked not-run ("" when the marker has none)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class Page:
    path: str
    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # misplaced markers, ```sh blocks

    @property
    def runnable(self) -> list[Block]:
        return [b for b in self.blocks if b.lang in RUN_LANGS and b.not_run is None]


def pages() -> list[Path]:
    """README.md and every Markdown page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def parse(path: Path) -> Page:
    """A page's fenced blocks, with the not-run marker of each (the last non-blank line before it)."""
    page = Page(path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path))
    lines = path.read_text(encoding="utf-8").splitlines()
    previous = ""  # the last non-blank line outside a block
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if NOT_RUN.match(previous.strip()) and lines[i].strip():
                page.problems.append(f"{page.path}:{i}: a not-run marker must come right before a code block")
            if lines[i].strip():
                previous = lines[i]
            i += 1
            continue
        indent, fence, lang = m["indent"], m["fence"], m["info"].lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence)
            and set(lines[i].strip()) == {fence[0]}
            and len(lines[i].strip()) >= len(fence)
        ):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        marker = NOT_RUN.match(previous.strip())
        block = Block(page.path, start + 1, lang, "\n".join(body) + "\n", marker[1].strip() if marker else None)
        if lang in SHELL_LANGS:
            page.problems.append(f"{block.where}: a ```{lang} block; write ```bash (run by the test) or ```text")
        if marker and lang not in RUN_LANGS:
            page.problems.append(
                f"{block.where}: a not-run marker before a ```{lang or 'plain'} block, which never runs"
            )
        page.blocks.append(block)
        previous = ""
        i += 1
    return page


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened with ``fence`` (the same character, at least as many)."""
    text = line.strip()
    return text.startswith(fence) and set(text) == {fence[0]}


def commands(block: Block) -> list[tuple[int, str, int]]:
    """A bash block's commands as (line in the page, command, expected exit code).

    Lines continued with a backslash are one command; a compound block (loop, heredoc, function)
    is one command as a whole.
    """
    if COMPOUND.search(block.text):
        return [(block.line + 1, block.text.rstrip("\n"), 0)]
    out: list[tuple[int, str, int]] = []
    pending, first = "", 0
    for n, raw in enumerate(block.text.splitlines(), start=block.line + 1):
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if not pending:
            first = n
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        command = pending + raw
        pending = ""
        m = EXITS.search(command)
        out.append((first, command.strip(), int(m[1]) if m else 0))
    return out


def shorten(command: str, data_dir: Path) -> str:
    """A command made quick on tiny data: short training, few trials, the tiny MNIST as --data-dir."""
    command = re.sub(r"--iters[ =]\S+", f"--iters {SHORT_ITERS}", command)
    command = re.sub(r"--epochs[ =]\S+", "--epochs 1", command)
    command = re.sub(r"--trials[ =]\S+", f"--trials {SHORT_TRIALS}", command)
    return re.sub(r"--data-dir[ =]\S+", f"--data-dir {shlex.quote(str(data_dir))}", command)


CHECK = r"""
__examples_check() {  # BLOCK LINE EXPECTED STATUS...: every piped command 0, the last one EXPECTED
  local block=$1 line=$2 expected=$3; shift 3
  local statuses=("$@") last=${@: -1} i
  for ((i = 0; i < ${#statuses[@]} - 1; i++)); do
    if [ "${statuses[$i]}" != 0 ]; then
      echo "$block $line ${statuses[*]}" > "$__EXAMPLES_STATUS"; exit 97
    fi
  done
  if [ "$last" != "$expected" ]; then echo "$block $line ${statuses[*]}" > "$__EXAMPLES_STATUS"; exit 97; fi
}
__examples_t0=${EPOCHREALTIME/./}  # microseconds: each command is shown with the time it starts at
__examples_show() { printf '\n[%s ms] %s\n' $(((${EPOCHREALTIME/./} - __examples_t0) / 1000)) "$1" >&2; }
trap 'rc=$?; [ -s "$__EXAMPLES_STATUS" ] || echo "exit $__examples_at $rc" > "$__EXAMPLES_STATUS"' EXIT
"""


def script(page: Page, data_dir: Path, helpers: Path) -> str:
    """One bash script running the page's runnable blocks in order, each command's status checked."""
    parts = [CHECK]
    for k, block in enumerate(page.runnable):
        if block.lang == "python":
            code = helpers / f"block{k}.py"
            code.write_text(block.text, encoding="utf-8")
            todo = [(block.line + 1, f"rnnmnist-python {shlex.quote(str(code))}", 0)]
        else:
            todo = [(n, shorten(c, data_dir), e) for n, c, e in commands(block)]
        for n, command, expected in todo:
            shown = f"$ {command}" if block.lang == "bash" else f">>> ({block.where}: python block)"
            parts += [
                f"__examples_at={block.line}:{n}",
                f"__examples_show {shlex.quote(shown)}",
                command,
                f'__examples_check {block.line} {n} {expected} "${{PIPESTATUS[@]}}"',
            ]
    parts.append('echo done > "$__EXAMPLES_STATUS"')
    return "\n".join(parts) + "\n"


def environment(data_dir: Path, bin_dir: Path, socket_path: Path, status: Path) -> dict[str, str]:
    """The page's environment: the tiny data, short training, the shim first on PATH."""
    # The caller's RNNMNIST_* settings (CI's real MNIST, say) are not the examples'; a machine without
    # bf16 (RNNMNIST_DISABLE_BF16, as make test-nobf16 sets) is one they must work on.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNMNIST_") or k == "RNNMNIST_DISABLE_BF16"}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        RNNMNIST_DATA_DIR=str(data_dir),
        RNNMNIST_TRAIN_ITERS=str(SHORT_ITERS),
        RNNMNIST_TRAIN_VAL_SIZE="100",  # the tiny data has 600 training images
        CUDA_VISIBLE_DEVICES="",  # --device auto means the CPU, as for most readers: no CUDA start-up per command
        RNNMNIST_EXAMPLES_SOCKET=str(socket_path),
        MPLBACKEND="Agg",
        NO_COLOR="1",
        COLUMNS="100",
        __EXAMPLES_STATUS=str(status),
    )
    return env


def write_shims(bin_dir: Path) -> None:
    """``rnnmnist`` and ``rnnmnist-python`` on PATH: both hand their work to the fork server."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, mode in (("rnnmnist", "cli"), ("rnnmnist-python", "python")):
        shim = bin_dir / name
        shim.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            f"import docexamples\ndocexamples.shim({mode!r})\n"
        )
        shim.chmod(0o755)


# --- the fork server and its client


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def _receive(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the other side closed the connection")
            data += chunk
        return data

    return exactly(struct.unpack(">I", exactly(4))[0])


def shim(mode: str) -> None:
    """The client: this process's streams, folder, environment and arguments to the server; its exit code back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(os.environ["RNNMNIST_EXAMPLES_SOCKET"])
        socket.send_fds(sock, [b"+"], [0, 1, 2])
        request = {"mode": mode, "argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}
        _send(sock, json.dumps(request).encode())
        code = int(_receive(sock))
    sys.exit(code)


def _run(request: dict) -> None:
    """In the forked child: become the command, then end the process with its exit code."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    code = 0
    try:
        if request["mode"] == "cli":
            sys.argv = ["rnnmnist", *request["argv"]]
            from rnnmnist.cli.main import main

            main()
        else:
            path = request["argv"][0]
            sys.argv = [path]
            source = Path(path).read_text(encoding="utf-8")
            exec(compile(source, path, "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:  # a Python block that fails: its traceback is the report
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)


def _worker(conn: socket.socket) -> None:
    """Per connection: fork the command, wait for it, report its exit code to the shim."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command waits for its own children
    _, fds, _, _ = socket.recv_fds(conn, 1, 3)
    request = json.loads(_receive(conn))
    pid = os.fork()
    if pid == 0:
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _run(request)
    for fd in fds:
        os.close(fd)
    _, status, usage = os.wait4(pid, 0)
    _send(conn, str(_exit_code(status)).encode())
    log = request["env"].get("RNNMNIST_EXAMPLES_CPU_LOG")  # for measuring: the CPU time each command took
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{usage.ru_utime + usage.ru_stime:.2f} {shlex.join(request['argv'])}\n")
    os._exit(0)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def preload() -> None:
    """Import torch, the heavy libraries most commands use, and every rnnmnist module whose extras are
    installed, before any fork (the server computes nothing: no thread pool exists to be copied)."""
    import importlib
    import pkgutil

    os.environ.setdefault("MPLBACKEND", "Agg")  # the plots are files: no window system is asked for
    for heavy in ("torch", "numpy", "PIL.Image", "matplotlib.pyplot"):  # what most commands need
        with contextlib.suppress(ImportError):
            importlib.import_module(heavy)

    import rnnmnist
    import rnnmnist.commands

    for package in (rnnmnist, rnnmnist.commands):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):
                continue
            with contextlib.suppress(ImportError):  # an extra not installed: its command says which
                importlib.import_module(info.name)


def serve(socket_path: str) -> None:
    """The server's main loop: a worker process per connection."""
    preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(socket_path)
        server.listen(16)
        print("ready", flush=True)
        while True:
            conn, _ = server.accept()
            if os.fork() == 0:
                server.close()
                try:
                    _worker(conn)
                finally:
                    os._exit(1)
            conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
