"""stub"""
import click
@click.command("web")
def web() -> None:
    pass
@click.command("html")
def report_html() -> None:
    pass
