"""The one exception type for problems a user can cause (and fix)."""


class PipelineError(Exception):
    """A problem in the user's input, with the place it came from.

    The message is written for a research coordinator: it names the file, row or line and the
    column or DICOM tag, and says what to do. It never contains an identifier value.
    A traceback of any other exception type means a bug in this project.
    """


def join_problems(title: str, problems: list[str]) -> str:
    """Format several problems under one heading, one per line."""
    return title + "\n" + "\n".join(f"  - {problem}" for problem in problems)
