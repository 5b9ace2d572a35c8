"""``mfclip push``: upload a checkpoint directory to a Hugging Face Hub model repository."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command(
        "push",
        no_args_is_help=True,
        epilog="Example:  mfclip push runs/diff-t2i/best my-org/mfclip-diff-t2i --private",
    )(push_command)


def push_command(
    checkpoint: str = typer.Argument(
        ..., help="Checkpoint directory (a training run directory pushes its best/ model)."
    ),
    repo_id: str = typer.Argument(..., help="Hub model repository, owner/name (created when missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    revision: str | None = typer.Option(
        None, "--revision", help="Branch to commit to (created from main when missing; default: main)."
    ),
    license: str | None = typer.Option(
        None,
        "--license",
        help="Hub licence identifier for the card (default: metadata 'license', else other).",
    ),
    message: str | None = typer.Option(None, "--message", "-m", help="Commit message."),
) -> None:
    """Upload a checkpoint (config.json, weights, model card with Hub front matter) in one commit.

    The weights are checked against their recorded size and SHA-256 first. Credentials come from
    huggingface_hub (`hf auth login` or HF_TOKEN); HF_ENDPOINT selects another Hub.
    """
    from mfclip.models.hub import push_checkpoint

    result = push_checkpoint(
        checkpoint, repo_id, private=private, revision=revision, license=license, commit_message=message
    )
    typer.echo(
        f"pushed {', '.join(result.files)} to {result.repo_id} "
        f"({result.revision}, commit {result.commit[:12]}): {result.url}"
    )
