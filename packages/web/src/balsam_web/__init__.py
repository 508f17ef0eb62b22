"""balsam web: a read-only live status page of a project, and `balsam report html`."""
