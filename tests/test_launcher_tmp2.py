from balsam_launcher import testing as lt
def test_x(db, tmp_path):
    app = lt.add_app(db, "a", "true")
    ids = lt.add_tasks(db, app, [{"name": "x"}])
    db.execute("UPDATE tasks SET state_message = 'y' WHERE id = %s", [ids[0]])
    db.execute("UPDATE tasks SET state = 'STAGED_IN' WHERE id = %s", [ids[0]])
    print(db.execute("select * from pg_trigger where tgrelid = 'tasks'::regclass").fetchall())
