"""Bounds on what apps and tasks hold: refused at the door by the API with one line naming the
limit, refused by the database for every other client, with the same numbers, changing nothing."""

from __future__ import annotations

import json
import re

import psycopg
import pytest
from psycopg import sql

from balsam import api
from balsam.errors import InvalidInput
from balsam.models import (
    APP_FIELDS,
    JSON_MAX_BYTES,
    JSON_MAX_DEPTH,
    NAME_CHARS,
    PATH_BYTES,
    TASK_FIELDS,
    TEXT_BYTES,
    Task,
    coerce_task_field,
    json_depth,
)

pytestmark = pytest.mark.pg

#: The longest value the API accepts for a text field of each kind, and one too long.
LONGEST = {"name": ("é" * NAME_CHARS, "é" * (NAME_CHARS + 1)),
           "word": ("é" * NAME_CHARS, "é" * (NAME_CHARS + 1)),
           "path": ("p" * PATH_BYTES, "é" * (PATH_BYTES // 2) + "p"),
           "str": ("s" * TEXT_BYTES, "é" * (TEXT_BYTES // 2) + "s"),
           "command": ("c" * TEXT_BYTES, "é" * (TEXT_BYTES // 2) + "c")}


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@pytest.fixture
def task(db) -> int:
    api.add_app("sim", "/bin/echo", conn=db)
    return api.add_task("sim", name="t", args="-v", conn=db).id  # type: ignore[return-value]


def snapshot(db) -> list[dict]:
    return db.execute("SELECT * FROM tasks t FULL JOIN apps a ON a.id = t.app_id "
                      "CROSS JOIN (SELECT count(*) AS events FROM task_events) e "
                      "CROSS JOIN (SELECT count(*) AS changes FROM changes) c").fetchall()


def test_json_depth_counts_without_recursion():
    assert [json_depth(v) for v in (1, "x", {}, [], {"a": [1]}, nested(32))] == [0, 0, 1, 1, 2, 32]
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert json_depth(deep) == JSON_MAX_DEPTH + 1  # stops counting past the limit


@pytest.mark.parametrize("field", sorted(f for f, s in TASK_FIELDS.items() if s.kind == "int"))
def test_numbers_are_bounded_alike_by_the_api_and_the_database(db, task, field):
    spec = TASK_FIELDS[field]
    assert spec.minimum is not None and spec.maximum is not None
    before = snapshot(db)
    for bad in (spec.minimum - 1, spec.maximum + 1):
        message = f"{field} must be between {spec.minimum:,} and {spec.maximum:,}, got {bad:,}"
        with pytest.raises(InvalidInput) as refused:
            api.modify_task(task, field, str(bad), conn=db)
        assert str(refused.value) == message
        with pytest.raises(psycopg.errors.CheckViolation, match=f"tasks_{field}_check"):
            db.execute(sql.SQL("UPDATE tasks SET {} = %s").format(sql.Identifier(field)), [bad])
    assert snapshot(db) == before
    for good in (spec.minimum, spec.maximum):
        assert getattr(api.modify_task(task, field, good, conn=db), field) == good


TEXT = [("task", f) for f, s in sorted(TASK_FIELDS.items()) if s.kind in LONGEST] + [
    ("app", f) for f in sorted(APP_FIELDS)]


@pytest.mark.parametrize(("entity", "field"), TEXT)
def test_text_is_bounded_alike_by_the_api_and_the_database(db, task, entity, field):
    kind = (TASK_FIELDS if entity == "task" else APP_FIELDS)[field].kind
    longest, too_long = LONGEST[kind]
    modify = api.modify_task if entity == "task" else api.modify_app
    target = task if entity == "task" else "sim"
    label = field if entity == "task" else f"app {field}"
    before = snapshot(db)
    with pytest.raises(InvalidInput, match=f"^{label} is .* long; the limit is"):
        modify(target, field, too_long, conn=db)  # type: ignore[operator]
    with pytest.raises(psycopg.errors.CheckViolation, match=f"{entity}s_{field}_check"):
        db.execute(sql.SQL("UPDATE {} SET {} = %s").format(
            sql.Identifier(f"{entity}s"), sql.Identifier(field)), [too_long])
    assert snapshot(db) == before
    assert getattr(modify(target, field, longest, conn=db), field) == longest  # type: ignore[operator]


@pytest.mark.parametrize("field", ["data", "environ_vars"])
def test_json_is_bounded_alike_by_the_api_and_the_database(db, task, field):
    deepest = nested(JSON_MAX_DEPTH) if field == "data" else {"A": "x"}
    too_deep = {"K": nested(JSON_MAX_DEPTH)}
    biggest = {"K": "x" * (JSON_MAX_BYTES - len('{"K": ""}'))}
    too_big = {"K": "é" * (JSON_MAX_BYTES // 2)}
    assert len(json.dumps(biggest).encode()) == JSON_MAX_BYTES
    before = snapshot(db)
    env = field == "environ_vars"  # a flat mapping of names to strings, first
    for bad, message in (
        (too_deep, "environment variable K must be a string" if env
         else f"{field} is nested more than 32 levels deep"),
        (too_big, f"{field} is 1,048,585 bytes as JSON; the limit is 1,048,576"),
        ([1], "environment variable 1 must look like NAME=VALUE" if env
         else "must be a JSON object"),
    ):
        with pytest.raises(InvalidInput, match=re.escape(message)):
            api.modify_task(task, field, bad, conn=db)
        with pytest.raises(psycopg.errors.CheckViolation):
            db.execute(sql.SQL("UPDATE tasks SET {} = %s").format(sql.Identifier(field)),
                       [psycopg.types.json.Jsonb(bad)])
    assert snapshot(db) == before
    for good in (deepest, biggest):
        assert getattr(api.modify_task(task, field, good, conn=db), field) == good


def test_json_too_deep_to_parse_is_refused_not_crashed(db, task):
    text = '{"d": ' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(InvalidInput, match="data is nested more than 32 levels deep"):
        coerce_task_field("data", text)
    with pytest.raises(InvalidInput, match="data is nested more than 32 levels deep"):
        api.add_task("sim", data=text, conn=db)


@pytest.mark.parametrize(("field", "value"), [
    ("name", "run\u202eexe.txt"), ("workflow", "wf\x9b31m"), ("cpu_affinity", "core\u2066"),
    ("user_workdir", "runs/a\nb"), ("user_workdir", "runs/\x1b[8mhidden")])
def test_names_and_paths_hold_no_control_or_reordering_characters(field, value):
    with pytest.raises(InvalidInput, match=f"^{field} .* may not contain control characters$"):
        coerce_task_field(field, value)


def test_json_with_a_lone_surrogate_is_refused_before_the_database(db, task):
    said = r"data is not valid Unicode text: it holds a lone surrogate \(\\ud800-\\udfff\)"
    for text in ('{"a": "\\ud800"}', '{"\\udfff": 1}'):
        with pytest.raises(InvalidInput, match=said):
            api.modify_task(task, "data", text, conn=db)
    assert api.modify_task(task, "data", '{"a": "\\ud83d\\ude00"}', conn=db).data == {"a": "😀"}


@pytest.mark.parametrize(("value", "message"), [
    ("'", "args \"'\" cannot be split into arguments (No closing quotation): check its quotes"),
    ('say "hi', "args 'say \"hi' cannot be split into arguments (No closing quotation): check "
                "its quotes"),
    ("trailing\\", "args 'trailing\\\\' cannot be split into arguments (No escaped character): "
                   "check its quotes"),
])
def test_args_that_do_not_split_are_refused_on_add_and_modify(db, task, value, message):
    before = snapshot(db)
    with pytest.raises(InvalidInput) as added:
        api.add_task("sim", args=value, conn=db)
    with pytest.raises(InvalidInput) as modified:
        api.modify_task(task, "args", value, conn=db)
    assert str(added.value) == str(modified.value) == message
    with pytest.raises(InvalidInput, match="app executable .* cannot be split"):
        api.modify_app("sim", "executable", f"/bin/echo {value}", conn=db)
    assert snapshot(db) == before


def test_refusals_are_one_short_line(db, task):
    for field, value in (("name", "\n" * 10_000), ("args", "'" + "x" * 60_000),
                         ("data", "{" * 10_000)):
        with pytest.raises(InvalidInput) as refused:
            api.modify_task(task, field, value, conn=db)
        assert "\n" not in str(refused.value) and len(str(refused.value)) < 200, field


def test_a_value_stored_before_the_bounds_is_still_readable(db, task):
    with db.transaction():  # what a project may hold from before migration 0012
        db.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_json_update")
        db.execute("UPDATE tasks SET data = %s::jsonb", ['{"d": ' + "[" * 900 + "]" * 900 + "}"])
        db.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_json_update")
    read = api.get_task(task, conn=db)
    assert read.data == {"balsam_unreadable": "nested more than 32 levels deep"}
    assert Task(data=nested(JSON_MAX_DEPTH)).data == nested(JSON_MAX_DEPTH)
