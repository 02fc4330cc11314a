"""The types of the `tftransfer` command's flags: each value checked alike in every command.

Each is an argparse `type`: it returns the parsed value or raises
`argparse.ArgumentTypeError`, which argparse turns into one line naming the
flag and exit status 2.
"""

import argparse

def unfreeze(value):
    return int(value) if value.isdigit() else value


def views(value):
    if value == "auto":
        return value
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"augmented views are a count or 'auto', not "
                                         f"{value!r}")
    return int(value)


def rate(value):
    """A learning rate: a positive number, or `auto`."""
    if value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"a learning rate is a positive number or "
                                         f"'auto', not {value!r}")
    return number


def number(kind, low, high=None, *, low_open=False, high_open=True):
    """An argparse type: a `kind` (int or float) in [low, high), or as the flags say."""
    def parse(value):
        try:
            number = kind(value)
        except ValueError:
            number = None
        fits = number is not None and (number > low if low_open else number >= low) and (
            high is None or (number < high if high_open else number <= high))
        if not fits:
            lowest = f"> {low}" if low_open else f">= {low}"
            highest = "" if high is None else (f" and < {high}" if high_open
                                               else f" and <= {high}")
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {noun} {lowest}{highest}, "
                                             f"not {value!r}")
        return number
    parse.__name__ = kind.__name__  # argparse names the type in its messages.
    return parse


#: The numbers the flags take, checked alike in every command.
POSITIVE = number(int, 1)
COUNT = number(int, 0)
FRACTION = number(float, 0.0, 1.0)
SIMILARITY = number(float, 0.0, 1.0, low_open=True, high_open=False)


def separator(value):
    if not value:
        raise argparse.ArgumentTypeError("must not be empty (a space by default)")
    return value


def rate_number(value):
    """A learning rate that must be a number (the top phase has no range test)."""
    number = rate(value)
    if number == "auto":
        raise argparse.ArgumentTypeError("must be a positive number, not 'auto'")
    return number


def augmentation(value):
    """Parses `auto`, `none` or `flip,rotation=0.1,...` for `build_classifier`."""
    if value in ("auto", "none"):
        return None if value == "none" else value
    options = {"flip": None}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, number = item.partition("=")
        if name == "flip":
            options["flip"] = number or "horizontal"
        elif name in ("rotation", "zoom", "translation", "contrast"):
            try:
                options[name] = float(number)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{name} needs a fraction, as in {name}=0.1") from None
        else:
            raise argparse.ArgumentTypeError(
                f"unknown augmentation {name!r}; use flip, rotation, zoom, "
                "translation, contrast")
    return options


def taps(text):
    if text == "none":
        return ()
    if text == "default":
        return text
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected 'default', 'none' or layer names")
    return names
