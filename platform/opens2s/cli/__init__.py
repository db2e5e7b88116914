"""The ``opens2s`` command line. Each command group lives in its own module; heavy imports
(torch, ray) happen inside the commands so that ``opens2s --help`` stays fast."""

from __future__ import annotations

import typer

from opens2s.cli import cluster as cluster_cli
from opens2s.cli import corpus as corpus_cli
from opens2s.cli import eval as eval_cli
from opens2s.cli import model as model_cli
from opens2s.cli import pipeline as pipeline_cli
from opens2s.cli import serve as serve_cli
from opens2s.cli import train as train_cli

app = typer.Typer(
    name="opens2s",
    help="OpenS2S Platform: build the corpus, train and serve the empathetic speech-to-speech LM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(model_cli.app, name="model", help="Inspect and talk to a model.")
app.add_typer(corpus_cli.app, name="corpus", help="Build and inspect the speech-dialogue corpus.")
app.add_typer(cluster_cli.app, name="cluster", help="Render KubeRay manifests from the config.")
app.add_typer(eval_cli.app, name="eval", help="Score a model on a spoken eval set; compare runs.")
app.command("train", help="Train on a corpus with Ray Train + DeepSpeed.")(train_cli.train)
app.command("serve", help="Serve the model on Ray Serve (WebSocket, HTTP, web page).")(
    serve_cli.serve
)
app.command("pipeline", help="Corpus -> units -> training -> export -> serve -> one spoken turn.")(
    pipeline_cli.pipeline
)


def main() -> None:
    """Console-script entry point."""
    app()
