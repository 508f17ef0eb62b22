"""``balsam job``: add one task (legacy options), many from a file (``--from``), or a parameter
sweep (``--sweep``), all or none, through COPY.

A sweep expands ``{VAR}`` placeholders (with Python format specs: ``{i:03d}``) in the string
options for every combination of its variables::

    balsam job --app sim --workflow scan --name 'run{i:03d}' --args '-n {i} -T {t}' \\
        --sweep i=1:100 --sweep t=0.5,1.0,2.0          # 300 tasks

``VALUES`` is an inclusive range of integers ``A:B`` or ``A:B:STEP`` (also Slurm's ``A-B`` and
the shell's ``A..B``), a list ``a,b,c`` or ``@FILE`` (one value a line). Values alone with a
``:`` must be such a range (``1.5:3`` is refused, not taken as one value); list items and lines
of a file are taken as they are (``t=1:30,2:00`` is two values).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import itertools
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

import click
import pluggy

from balsam import api, bulk
from balsam.durations import wall_time_type
from balsam.errors import InvalidInput
from balsam.output import plain

#: Options that are task fields, as click names them, with the field they set.
FIELDS = ("name", "workflow", "app_name", "args", "description", "wall_time_minutes",
          "num_nodes", "ranks_per_node", "threads_per_rank", "threads_per_core", "cpu_affinity",
          "node_packing_count", "gpus_per_rank", "mpi_flags", "coschedule_num_nodes", "env",
          "data", "input_files", "post_error_handler", "post_timeout_handler",
          "auto_timeout_retry", "allow_failed_parents", "workdir", "parents", "stage_in_url",
          "stage_out_url", "stage_out_files")
#: Most values one sweep variable may take, and most tasks one sweep (or make_dummies) may make.
MAX_VALUES = 10_000_000
#: Largest ``--sweep VAR=@FILE``, in bytes (read whole: its values are combined in memory).
MAX_SWEEP_FILE = 64 << 20
#: Longest line of ``--from``, in characters (a task's data alone may take 1 MiB as JSON).
MAX_LINE = 8 << 20
_RANGE = re.compile(r"^(-?\d+):(-?\d+)(?::(-?\d+))?$|^(\d+)-(\d+)$|^(-?\d+)\.\.(-?\d+)$")
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@click.command("job")
@click.option("--name", help="Task name (part of its working directory).")
@click.option("--workflow", "--wf", "workflow", help="Workflow it belongs to.")
@click.option("--app", "--application", "app_name", help="Name of its app.")
@click.option("--args", default="", help="Command-line arguments for the app.")
@click.option("--description", default="", help="Free text.")
@click.option("--wall-time", "--wall-time-minutes", "--wall-minutes", "wall_time_minutes",
              type=wall_time_type(), default=1, show_default=True,
              help="Expected run time: minutes (90), 1:30:00 or 2h.")
@click.option("--num-nodes", type=int, default=1, show_default=True)
@click.option("--ranks-per-node", type=int, default=1, show_default=True)
@click.option("--threads-per-rank", type=int, default=1, show_default=True)
@click.option("--threads-per-core", type=int, default=1, show_default=True)
@click.option("--cpu-affinity", default="none", show_default=True)
@click.option("--node-packing-count", type=int, default=1, show_default=True,
              help="How many such tasks may share a node (serial mode).")
@click.option("--gpus-per-rank", type=int, default=0, show_default=True,
              help="GPUs each rank gets to itself (the launcher's --gpus-per-node are shared "
                   "out, never one to two tasks).")
@click.option("--mpi-flags", default="", metavar="FLAGS",
              help="Extra arguments for the MPI launcher, before the executable (split like a "
                   "shell command line).")
@click.option("--coschedule-num-nodes", type=int, default=0, show_default=True,
              help="Idle nodes to reserve beside --num-nodes (mpi mode; named to the task in "
                   "BALSAM_COSCHEDULED_NODES).")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
              help="Environment variable for the task (repeatable).")
@click.option("--data", default="{}", metavar="JSON", help="A JSON object for the task's use.")
@click.option("--input-files", default="*", show_default=True, metavar="GLOB",
              help="Patterns of files to link from the parents' directories.")
@click.option("--url-in", "--stage-in-url", "stage_in_url", default="", metavar="URL",
              help="Fetch this into the working directory before preprocessing (file:///PATH, "
                   "rsync://HOST/PATH, scp://HOST/PATH, or a site's scheme).")
@click.option("--url-out", "--stage-out-url", "stage_out_url", default="", metavar="URL",
              help="Send the files matching --stage-out-files there after postprocessing.")
@click.option("--stage-out-files", default="", metavar="GLOB",
              help="Patterns of files of the working directory to send to --url-out.")
@click.option("--post-error-handler", "--post-handle-error", "post_error_handler",
              is_flag=True, help="Let the postprocess script handle a run error.")
@click.option("--post-timeout-handler", "--post-handle-timeout", "post_timeout_handler",
              is_flag=True, help="Let the postprocess script handle a timeout.")
@click.option("--auto-timeout-retry/--no-auto-timeout-retry", " /--disable-auto-timeout-retry",
              default=True, show_default=True, help="Run it again after a timeout.")
@click.option("--allow-failed-parents", "--allow_failed_parents", "allow_failed_parents",
              is_flag=True, help="Run once every parent ended, even if some failed.")
@click.option("--workdir", default=None,
              help="Working directory (default: data/WORKFLOW/NAME_ID in the project).")
@click.option("--parent", "parents", type=int, multiple=True, metavar="ID",
              help="A task this one waits for (repeatable).")
@click.option("--from", "from_file", metavar="FILE",
              help="Add one task per line of FILE ('-': standard input): JSON objects, or CSV "
                   "with a header of field names. Options given here are the defaults.")
@click.option("--sweep", "--range", "sweeps", multiple=True, metavar="VAR=VALUES",
              help="Add a task per value, {VAR} filled in the other options: integers A:B or "
                   "A..B (inclusive), A:B:STEP, a list a,b,c (items as they are: t=1:30,2:00 "
                   "is two values) or @FILE (one value a line). Alone, VALUES with ':' must be "
                   "an integer range. Several --sweep make every combination.")
@click.option("--dry-run", is_flag=True,
              help="Check the tasks as adding them would, then print them as JSON lines "
                   "instead of adding them.")
@click.option("--json", "as_json", is_flag=True, help="Print the new task(s) as JSON.")
@click.option("--yes", "-y", is_flag=True, hidden=True, help="Accepted for legacy scripts.")
@click.pass_context
def job(ctx: click.Context, from_file: str | None, sweeps: tuple[str, ...], dry_run: bool,
        as_json: bool, yes: bool, **options: Any) -> None:
    """Add a task: an app run with arguments and resources; or many (--from, --sweep)."""
    given = {k: v for k, v in options.items()
             if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT
             or k == "input_files"}  # legacy's default, "*", for every form of balsam job
    if from_file and sweeps:
        message = "give --from or --sweep, not both"
        raise click.UsageError(message)
    if from_file:
        with _open(from_file) as stream:
            run_bulk(from_lines(stream, _spec(given)), dry_run, as_json, _task_number)
        return
    specs: Iterable[dict[str, Any]]
    if sweeps:
        specs = expand(_spec(given), [parse_sweep(s) for s in sweeps])
    else:
        missing = [f"--{k.replace('_name', '')}" for k in ("name", "workflow", "app_name")
                   if not options[k]]
        if missing:
            message = f"missing option {', '.join(missing)} (or use --from FILE or --sweep)"
            raise click.UsageError(message)
        specs = [_spec(options)]
        check_urls(options, ctx.find_object(pluggy.PluginManager))
    if sweeps or dry_run:  # one task's errors are not prefixed, as api.add_tasks gives them
        run_bulk(specs, dry_run, as_json, _task_number if sweeps else None)
        return
    (task_id,) = api.add_tasks(specs)
    task = api.get_task(task_id)
    if as_json:
        from balsam_cli.ls_commands import plain_task

        click.echo(json.dumps(plain(plain_task(task)), indent=2, ensure_ascii=False))
        return
    click.echo(f"Added task {task.id} ({task.state}) in {task.workdir}")


def check_urls(spec: Mapping[str, Any], pm: pluggy.PluginManager | None) -> None:
    """Refuse a staging URL that no installed transfer method handles, at the door."""
    from balsam.plugins import get_plugin_manager
    from balsam.staging import TransferFailed, method_for, parse_url, transfer_methods

    for key, option in (("stage_in_url", "--url-in"), ("stage_out_url", "--url-out")):
        if spec.get(key):
            methods = transfer_methods(pm or get_plugin_manager())
            try:
                method_for(methods, parse_url(spec[key], what=option))
            except TransferFailed as exc:
                message = f"{option}: {exc}"
                raise InvalidInput(message) from None


def _spec(options: Mapping[str, Any]) -> dict[str, Any]:
    """Task fields from option values (``app_name`` is ``app``, ``env`` a list of NAME=VALUE)."""
    spec = {("app" if k == "app_name" else k): v for k, v in options.items() if k in FIELDS}
    if "env" in spec:
        spec["env"] = list(spec["env"])
    if "parents" in spec:
        spec["parents"] = list(spec["parents"])
    return spec


def _task_number(index: int) -> str:
    return f"task {index + 1}"


def run_bulk(specs: Iterable[dict[str, Any]], dry_run: bool, as_json: bool,
             where: Callable[[int], str] | None) -> None:
    """Add the tasks, all or none; or (dry run) check them as adding them would, then print
    them: nothing is printed unless all pass (kept in a temporary file meanwhile)."""
    if dry_run:
        with tempfile.SpooledTemporaryFile(1 << 24, "w+", encoding="utf-8",
                                           errors="backslashreplace") as out:
            bulk.check_tasks(api.connection(), _copied(specs, out), where=where)
            out.seek(0)
            for line in out:
                click.echo(line, nl=False)
        return
    progress = Progress() if sys.stderr.isatty() else None
    ids = bulk.insert_tasks(api.connection(), specs, progress=progress, where=where)
    if progress:
        progress.done()
    if as_json:
        click.echo(json.dumps({"count": len(ids), "ids": ids}))
    elif ids:
        click.echo(f"Added {len(ids):,} tasks (ids {ids[0]} to {ids[-1]})")
    else:
        click.echo("No task to add.")


def _copied(specs: Iterable[dict[str, Any]], out: IO[str]) -> Iterator[dict[str, Any]]:
    """``specs``, each also written to ``out`` as a JSON line."""
    for spec in specs:
        out.write(json.dumps(plain(spec), ensure_ascii=False) + "\n")
        yield spec


class Progress:
    """A one-line progress report on a terminal's stderr, at most ten times a second."""

    def __init__(self) -> None:
        self.start = self.shown = time.monotonic()

    def __call__(self, count: int) -> None:
        now = time.monotonic()
        if now - self.shown >= 0.1:
            self.shown = now
            rate = count / max(now - self.start, 1e-9)
            click.echo(f"\r{count:,} tasks sent ({rate:,.0f}/s)", nl=False, err=True)

    def done(self) -> None:
        click.echo("\r\033[K", nl=False, err=True)


# --- sweeps ------------------------------------------------------------------------------------


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``VAR=VALUES`` as the variable and its values (see the module's docstring)."""
    var, sep, values = text.partition("=")
    var = var.strip()
    if not sep or not _VAR.fullmatch(var):
        message = f"--sweep {text!r}: expected VAR=VALUES, e.g. i=1:100 or x=0.1,0.2"
        raise InvalidInput(message)
    return var, parse_values(values.strip(), var)


def parse_values(text: str, var: str = "x") -> list[Any]:
    """``1:10``, ``1:10:3``, ``1-10``, ``1..10``, ``a,b,c`` or ``@FILE`` as a list of values
    (numbers where every item is one)."""
    if text.startswith("@"):
        return _typed(read_values(text[1:], var))
    match = _RANGE.fullmatch(text)
    if match:
        a, b, step, *ends = match.groups()
        lo, hi = (a, b) if a is not None else [e for e in ends if e is not None]
        first, last = int(lo), int(hi)
        step_n = int(step) if step else (1 if last >= first else -1)
        if step_n == 0 or (last - first) * step_n < 0:
            message = f"--sweep {var}={text}: the step {step_n} never gets from {first} to {last}"
            raise InvalidInput(message)
        count = (last - first) // step_n + 1
        if count > MAX_VALUES:
            message = f"--sweep {var}={text}: {count:,} values, more than {MAX_VALUES:,}"
            raise InvalidInput(message)
        return list(range(first, last + (1 if step_n > 0 else -1), step_n))
    if ":" in text and "," not in text:
        message = (f"--sweep {var}={text}: alone, a value with ':' must be a range of integers "
                   f"A:B or A:B:STEP (e.g. 1:100:10); list other values with commas (a,b) or one "
                   f"a line in @FILE")
        raise InvalidInput(message)
    items = [v.strip() for v in text.split(",")]
    if not text or any(not v for v in items):
        message = f"--sweep {var}={text!r}: expected A:B, A:B:STEP, a,b,c or @FILE"
        raise InvalidInput(message)
    return _typed(items)


def read_values(path: str, var: str = "x") -> list[str]:
    """The values of ``--sweep VAR=@FILE``: its non-blank lines, stripped (UTF-8, with or without
    a byte order mark; at most ``MAX_SWEEP_FILE`` bytes and ``MAX_VALUES`` values)."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_SWEEP_FILE + 1)
    except OSError as exc:
        message = f"--sweep {var}: cannot read {path}: {exc.strerror}"
        raise InvalidInput(message) from None
    return values_of(data, path, var)


def values_of(data: bytes, path: str, var: str = "x") -> list[str]:
    """The values in the bytes of a sweep file (see :func:`read_values`)."""
    if len(data) > MAX_SWEEP_FILE:
        message = (f"--sweep {var}: {path} is larger than {MAX_SWEEP_FILE >> 20} MiB: split the "
                   f"sweep, or give one task a line with --from")
        raise InvalidInput(message)
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        number = data.count(b"\n", 0, exc.start) + 1
        message = (f"--sweep {var}: {path} is not UTF-8 text ({exc.reason} on line {number}): "
                   f"save it as UTF-8")
        raise InvalidInput(message) from None
    items: list[str] = []
    for line in io.StringIO(text):
        if line.strip():
            if len(items) == MAX_VALUES:
                message = f"--sweep {var}: {path} has more than {MAX_VALUES:,} values"
                raise InvalidInput(message)
            items.append(line.strip())
    return items


def _typed(items: list[str]) -> list[Any]:
    for kind in (int, float):
        try:
            return [kind(v) for v in items]
        except ValueError:
            continue
    return items


def expand(template: Mapping[str, Any], sweeps: list[tuple[str, list[Any]]]) -> Iterator[
        dict[str, Any]]:
    """One task specification per combination of the sweep values, in order (the last
    variable varies fastest), with ``{VAR}`` filled in every string of ``template``."""
    names = [v for v, _ in sweeps]
    if len(set(names)) != len(names):
        message = f"--sweep names a variable twice: {', '.join(names)}"
        raise InvalidInput(message)
    total = 1
    for _, values in sweeps:
        total *= len(values)
    if total > MAX_VALUES:
        message = f"the sweep makes {total:,} tasks, more than {MAX_VALUES:,}"
        raise InvalidInput(message)
    for combo in itertools.product(*(values for _, values in sweeps)):
        env = dict(zip(names, combo, strict=True))
        yield {k: _fill(v, env, k) for k, v in template.items()}


def _fill(value: Any, env: dict[str, Any], field: str) -> Any:
    if isinstance(value, str):
        try:
            return value.format_map(env)
        except KeyError as exc:
            message = (f"--{field.replace('_', '-')} {value!r} uses {{{exc.args[0]}}}, which no "
                       "--sweep defines (write {{ and }} for literal braces)")
            raise InvalidInput(message) from None
        except (ValueError, IndexError) as exc:
            message = f"--{field.replace('_', '-')} {value!r}: {exc}"
            raise InvalidInput(message) from None
    if isinstance(value, list):
        return [_fill(v, env, field) for v in value]
    return value


# --- files -------------------------------------------------------------------------------------


def _open(path: str) -> contextlib.AbstractContextManager[IO[str]]:
    """The file to read tasks from as UTF-8, a byte order mark skipped (``-``: standard input,
    whatever the locale, left open)."""
    if path == "-":
        return _stdin()
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror}"
        raise InvalidInput(message) from None


@contextlib.contextmanager
def _stdin() -> Iterator[IO[str]]:
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        yield sys.stdin
        return
    text = io.TextIOWrapper(buffer, encoding="utf-8-sig", newline="")
    try:
        yield text
    finally:
        text.detach()  # standard input stays open


def from_lines(stream: IO[str], defaults: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Task specifications from JSON lines or CSV (told apart by the first line, see
    :func:`is_json`), each over ``defaults``; InvalidInput names the line of a bad one."""
    try:
        numbered = enumerate(bounded_lines(stream), 1)
        start, first = next(((n, line) for n, line in numbered if line.strip()), (0, ""))
        if not first:
            return
        rest = itertools.chain([(start, first)], numbered)
        if is_json(first):
            yield from _json_lines(rest, defaults)
        else:
            yield from _csv_rows((line for _, line in rest), start, defaults)
    except UnicodeDecodeError as exc:
        message = f"the input is not UTF-8 text ({exc.reason}): save it as UTF-8"
        raise InvalidInput(message) from None


def bounded_lines(stream: IO[str], limit: int | None = None) -> Iterator[str]:
    """The lines of ``stream``, refusing one longer than ``limit`` characters (default
    ``MAX_LINE``), which could be endless (``--from /dev/zero``)."""
    limit = limit or MAX_LINE
    for number in itertools.count(1):
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and line[-1] not in "\r\n":
            message = (f"line {number} is longer than {limit:,} characters: give one task a "
                       f"line")
            raise InvalidInput(message)
        yield line


def is_json(first: str) -> bool:
    """Whether input whose first line is ``first`` is JSON lines (else CSV): any JSON but a
    string (``"name"`` may be a quoted CSV header), so that ``42`` or ``[1, 2]`` is refused as
    not an object rather than read as a header."""
    try:
        value = json.loads(first)
    except ValueError:
        return first.lstrip().startswith(("{", "["))
    return not isinstance(value, str)


def _json_lines(lines: Iterable[tuple[int, str]], defaults: Mapping[str, Any]) -> Iterator[
        dict[str, Any]]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            spec = json.loads(line)
        except json.JSONDecodeError as exc:
            message = f"line {number}: not a JSON object ({exc.msg} at column {exc.colno})"
            raise InvalidInput(message) from None
        if not isinstance(spec, dict):
            message = (f"line {number}: expected a JSON object (one task a line), got "
                       f"{type(spec).__name__}")
            raise InvalidInput(message)
        yield {**defaults, **spec}


def _csv_rows(lines: Iterable[str], start: int, defaults: Mapping[str, Any]) -> Iterator[
        dict[str, Any]]:
    reader = csv.reader(lines)
    header: list[str] | None = None
    for row in _csv_records(reader, start):
        if header is None:
            header = [h.strip() for h in row]
            _check_header(header, start)
        elif row:
            number = start + reader.line_num - 1
            if len(row) != len(header):
                message = f"line {number}: {len(row)} values for {len(header)} columns"
                raise InvalidInput(message)
            spec = {**defaults}
            for key, value in zip(header, row, strict=True):
                if key == "parents":
                    spec[key] = [int(p) if p.isdigit() else p
                                 for p in re.split(r"[\s;]+", value.strip()) if p]
                elif value != "" or key not in defaults:
                    spec[key] = value
            yield spec


def _csv_records(reader: Any, start: int) -> Iterator[list[str]]:
    """The records of a CSV reader, its errors (a field too large) naming their line."""
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            message = f"line {start + reader.line_num - 1}: {exc} (or give JSON lines)"
            raise InvalidInput(message) from None
        if row is None:
            return
        yield row


def _check_header(header: list[str], number: int) -> None:
    """Refuse a CSV header that does not name task fields, each once (even with no row)."""
    if not all(header) or len(set(header)) != len(header):
        message = (f"line {number}: the CSV header must name each column once, got "
                   f"{','.join(header)}")
        raise InvalidInput(message)
    for key in header:
        try:
            bulk.check_field(key)
        except InvalidInput as exc:
            message = f"line {number}: CSV header: {exc}"
            raise InvalidInput(message) from None
