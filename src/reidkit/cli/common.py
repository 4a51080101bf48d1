"""What every command shares: the one console, the one way to fail, the options that recur.

A command parses its options, calls one function of the Python API (:mod:`reidkit.search.api` for
the operator commands) and prints. Errors the API raises for bad input become ``error: <message>``
and exit code 2 (:func:`fail`, or :func:`failing` around a call).

Print through ``common.console`` (the module attribute, looked up when printing): tests replace it
with a wider console to read whole lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

console = Console()


def fail(msg: str) -> NoReturn:
    """Print ``error: msg`` and exit with status 2."""
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextlib.contextmanager
def failing(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the given exceptions raised inside the block into :func:`fail`: their message as is (a
    ``KeyError``'s without the quotes its ``str`` adds)."""
    try:
        yield
    except errors as exc:
        fail(str(exc).strip("'\"") if isinstance(exc, KeyError) else str(exc))


def warn(msg: str) -> None:
    console.print(f"[yellow]warning:[/] {msg}", highlight=False, soft_wrap=True)


# --- options that several commands take ---------------------------------------------------------------
GALLERY_HELP = (
    "Gallery: a folder, milvus://[USER:PASSWORD@]HOST[:PORT]/NAME (a Milvus server) or a Milvus Lite folder ending .db"
)
# A gallery is a URI, not a Path: a Path would fold milvus://host into milvus:/host.
GalleryUri = Annotated[str, typer.Option("--gallery", "-g", help=GALLERY_HELP, show_default=False)]
Model = Annotated[str | None, typer.Option(help="Architecture, e.g. osnet_x0_25 (for torchreid files).")]
Weights = Annotated[
    Path | None, typer.Option(help="Re-id checkpoint: a reidkit model file or a torchreid file (default: shipped).")
]
Backend = Annotated[
    str,
    typer.Option(
        help="Embedding backend: torch, onnx (ONNX Runtime), openvino, or openvino-int8 (the model's shipped "
        "INT8 file: the default model has one)."
    ),
]
Threads = Annotated[int | None, typer.Option(help="Inference threads (default: all cores).")]
DatasetRoot = Annotated[Path | None, typer.Option(help="Folder holding the dataset (default $REIDKIT_DATA).")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON.")]
# k-reciprocal re-ranking (reidkit eval --rerank, reidkit cluster)
K1 = Annotated[int, typer.Option(help="Re-ranking k1.")]
K2 = Annotated[int, typer.Option(help="Re-ranking k2.")]
