"""The sources `%imagen4 batch SOURCE` reads: a list variable, a CSV file, or one column of a DataFrame.

Nothing is evaluated: names are looked up in the user's namespace and indexed once.
"""
from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError


def split_source(rest: str) -> tuple[str, str]:
    """`SOURCE options...`: the source as written up to the first space outside quotes and brackets, so that
    df['my column'] stays whole (shell quoting would make it df[my column]); a source quoted as a whole (a
    file name with spaces) is unquoted."""
    rest = rest.strip()
    if not rest or rest.startswith("-"):
        raise UsageError("%imagen4 batch needs a source first: a list variable (prompts), a CSV file "
                         "(prompts.csv) or a DataFrame column (df['prompt'] or df.prompt).")
    quote, depth, end = "", 0, len(rest)
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch.isspace() and depth <= 0:
            end = i
            break
    if quote:
        raise UsageError("Could not read the source: a quote is not closed.")
    source, options = rest[:end], rest[end:]
    if len(source) >= 2 and source[0] in "'\"" and source[-1] == source[0]:
        source = source[1:-1]
    return source, options


def batch_source(text: str, namespace: dict) -> tuple[Any, str]:
    """What `%imagen4 batch SOURCE` names, and how to call it in messages: a list variable (`prompts`), a CSV
    file (`prompts.csv`: its rows as dicts) or a variable with one subscript or attribute (`df['prompt']`,
    `df.prompt`). Nothing is evaluated: the name is looked up in `namespace`, then indexed once."""
    import ast
    import os

    if text.lower().endswith((".csv", ".tsv")) or os.sep in text or "/" in text or os.path.isfile(text):
        return csv_items(text), text
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        node = None
    key: Any = None
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        if not (isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, (str, int))):
            raise UsageError(f"{text}: only one literal subscript is understood, such as df['prompt'].")
        name, key = node.value.id, ("item", node.slice.value)
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.attr.startswith("_"):
            raise UsageError(f"{text}: a private attribute cannot be a batch source.")
        name, key = node.value.id, ("attr", node.attr)
    elif isinstance(node, ast.Name):
        name = node.id
    else:
        raise UsageError(f"{text!r} is not a list variable, a .csv file, or a column such as df['prompt'] or "
                         "df.prompt.")
    if name not in namespace:
        raise UsageError(f"No variable named {name!r} (and no file {text!r}); define it first.")
    value = namespace[name]
    if key is None:
        return value, text
    kind, k = key
    try:
        return (value[k] if kind == "item" else getattr(value, k)), text
    except (KeyError, IndexError, AttributeError, TypeError):
        what = f"column or key {k!r}" if kind == "item" else f"attribute {k!r}"
        columns = getattr(value, "columns", None)
        hint = f" (columns: {', '.join(map(str, columns))})" if columns is not None else ""
        raise UsageError(f"{name} has no {what}{hint}.") from None


def csv_items(path: str) -> list[dict]:
    """The rows of a CSV file as request dicts: a `prompt` column is required; the other request-field columns
    (negative_prompt, aspect_ratio, num_images, seed, callback_url) are used when present, empty cells take the
    defaults, and other columns are ignored."""
    import csv

    from ..research.batch import REQUEST_FIELDS

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or [] if c]
            if "prompt" not in columns:
                raise UsageError(f"{path} has no 'prompt' column (columns: {', '.join(columns) or 'none'}).")
            items = []
            for row in reader:
                item = {k.strip(): v.strip() for k, v in row.items()
                        if k and k.strip() in REQUEST_FIELDS and isinstance(v, str) and v.strip()}
                if item or any(isinstance(v, str) and v.strip() for v in row.values()):
                    items.append(item)
    except FileNotFoundError:
        raise UsageError(f"No file {path}.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"Could not read {path}: {err}") from None
    if not items:
        raise UsageError(f"{path} has no rows.")
    return items
