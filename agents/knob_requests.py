"""Chat requests that name knobs or features, mapped onto exactly that change.

The heuristic brain reads three kinds of request on any workspace that declares knobs
(`[knobs.*]`), before it looks at recipes:

- ``set C to 0.1`` / ``set learning rate to 0.05`` / ``MODEL = hgb``: one knob, named as
  declared or with spaces for underscores, any case; the value is parsed for the knob's type
  and checked against its range or choices;
- ``add feature segment`` / ``add features a, b and c`` / ``use native_country``: names of
  the feature catalog go into the features knob whose candidates hold them;
- ``drop feature age`` / ``remove the aux features``: names leave it; a word may also be a
  catalog group (every current feature of that group) or a name prefix (``aux`` matches
  ``aux_1``, ``aux_2``);
- ``add the product of a and b`` / ``add a times b`` / ``add the ratio of a to b`` / ``add
  age in 4 buckets``: a derived entry (``product(a,b)``, ``ratio(a,b)``, ``bucket(a,4)``)
  that the harness computes from two numeric catalog features (tools/derived.py).

A request in one of these forms that cannot be done (an unknown knob or feature, a value out
of range, nothing would change, a list shorter than `min_size`) raises
`UnmappableRequest` saying exactly why: the chat answers plainly and exits non-zero rather
than running something else. A request in none of these forms is not this module's
(`knob_request` returns None) and goes to the recipe library.

A mapped request is a `knobs` proposal (params: every knob's value, as the knob search
writes them), so its branch changes only that value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.knob_search import KNOB_RECIPE, feature_candidates, describe_change
from agentx.errors import UserError
from agentx.state import Proposal
from agentx.workspace import Manifest
from tools.derived import parse
from tools.feature_catalog import load_catalog
from tools.knobs import check_value, read_knob

SET = re.compile(r"^\s*(?:please\s+)?(?:set|change|make|put)\s+(?:the\s+)?(?:knob\s+)?(?P<name>[\w .-]+?)\s+"
                 r"(?:to|=)\s+(?P<value>\S+?)\s*\.?\s*$|^\s*(?P<name2>[\w.-]+)\s*=\s*(?P<value2>\S+?)\s*$", re.I)
ADD = re.compile(r"^\s*(?:please\s+)?(?:add|include|use)\s+(?:the\s+)?(?:features?\s+)?(?P<names>.+?)"
                 r"(?:\s+features?)?(?:\s+(?:as\s+(?:an?\s+)?)?(?:input|inputs))?\s*\.?\s*$", re.I)
DROP = re.compile(r"^\s*(?:please\s+)?(?:drop|remove|exclude|delete)\s+(?:the\s+)?(?:features?\s+)?"
                  r"(?P<names>.+?)(?:\s+features?)?(?:\s+(?:input|inputs))?\s*\.?\s*$", re.I)
TRUE, FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


class UnmappableRequest(UserError):
    """A request about knobs or features that names something this workspace cannot change."""


@dataclass(frozen=True)
class Change:
    knob: str
    value: Any
    what: str          # for the rationale: "set C 0.1 -> 0.5", "add segment to FEATURES"


def knob_request(request: str, root: Path, manifest: Manifest) -> Proposal | None:
    """The `knobs` proposal a request names, None when it is not a knob or feature request,
    or UnmappableRequest when it is one that cannot be done."""
    if not manifest.knobs:
        return None
    change = _parse(request, Path(root), manifest)
    if change is None:
        return None
    current = {name: read_knob(root, spec) for name, spec in manifest.knobs.items()}
    value = check_value(manifest.knobs[change.knob], change.value)
    if _same(current[change.knob], value):
        raise UnmappableRequest(f"{request!r}: {change.knob} is already {_show(current[change.knob])}; nothing to "
                                f"change")
    params = {**current, change.knob: value}
    return Proposal(title="Set knobs " + describe_change(manifest, change.knob, current[change.knob], value),
                    recipe=KNOB_RECIPE, params=params, source="chat",
                    hypothesis=f"The requested change of {change.knob} should improve validation "
                               f"{manifest.metric.primary}.",
                    rationale=f"mapped the request {request!r} onto knob {change.knob}: {change.what}")


def _parse(request: str, root: Path, manifest: Manifest) -> Change | None:
    if (m := SET.match(request)) is not None:
        name = m.group("name") or m.group("name2")
        raw = m.group("value") or m.group("value2")
        knob = _knob_named(name, manifest)
        if knob is None:
            if m.group("name2") is None and not _looks_like_knob(name):
                return None                      # "set up a cross network to ..." is not about knobs
            raise UnmappableRequest(f"{request!r}: no knob named {name.strip()!r} in agentx.toml (knobs: "
                                    f"{', '.join(manifest.knobs)})")
        value = _parse_value(knob, raw, manifest)
        return Change(knob, value, f"set {knob} to {_show(value)}")
    for pattern, verb in ((ADD, "add"), (DROP, "drop")):
        if (m := pattern.match(request)) is not None:
            return _features_change(request, verb, m.group("names"), root, manifest)
    return None


def _features_change(request: str, verb: str, names_text: str, root: Path, manifest: Manifest) -> Change | None:
    knobs = [n for n, spec in manifest.knobs.items() if spec.type == "features"]
    words = [w for w in re.split(r"\s*,\s*|\s+and\s+|\s+", names_text.strip()) if w and w.lower() != "the"]
    if not knobs:
        if any(_is_catalog_name(w, root, manifest) for w in words):
            raise UnmappableRequest(f"{request!r}: this workspace declares no features knob ([knobs.*] with type = "
                                    f"\"features\"), so the heuristic brain cannot change its inputs")
        return None
    candidates = feature_candidates(root, manifest)
    groups = _groups(root, manifest)
    if verb == "add" and (derived := _derived_phrase(names_text)) is not None:
        return _add_derived(request, derived, knobs[0], root, manifest)
    if verb == "add":
        for knob in knobs:
            if all(w in candidates[knob] for w in words):
                current = read_knob(root, manifest.knobs[knob]) or []
                already = [w for w in words if w in current]
                if already:
                    raise UnmappableRequest(f"{request!r}: {knob} already has {', '.join(already)}; nothing to add")
                return Change(knob, [*current, *words], f"add {', '.join(words)} to {knob}")
        every = sorted({c for k in knobs for c in candidates[k]})
        unknown = [w for w in words if w not in every]
        raise UnmappableRequest(f"{request!r}: {', '.join(unknown) or ' '.join(words)} is not a feature any features "
                                f"knob can take (candidates: {', '.join(every)}); features.yaml lists the catalog")
    for knob in knobs:
        current = read_knob(root, manifest.knobs[knob]) or []
        dropped: list[str] = []
        unknown = []
        for word in words:
            hit = ([word] if word in current else
                   [f for f in current if groups.get(f) == word] or
                   [f for f in current if f.startswith(f"{word}_")])
            (dropped.extend(h for h in hit if h not in dropped) if hit else unknown.append(word))
        if dropped and not unknown:
            keep = [f for f in current if f not in dropped]
            minimum = manifest.knobs[knob].min_size or 0
            if len(keep) < max(minimum, 1):
                raise UnmappableRequest(f"{request!r}: dropping {', '.join(dropped)} leaves {len(keep)} of {knob}'s "
                                        f"features, fewer than its min_size {minimum}")
            return Change(knob, keep, f"drop {', '.join(dropped)} from {knob}")
    present = sorted({f for k in knobs for f in (read_knob(root, manifest.knobs[k]) or [])})
    raise UnmappableRequest(f"{request!r}: {' '.join(words)} names no feature the model reads now (current: "
                            f"{', '.join(present)}; a word may also be a catalog group or a name prefix)")


def _derived_phrase(text: str) -> str | None:
    """A derived entry's name from words: "the product of a and b", "a times b", "a x b",
    "the ratio of a to b", "a divided by b", "a in 4 buckets", or the name itself."""
    text = text.strip().rstrip(".")
    if parse(text) is not None:
        return parse(text).canonical
    word = r"([A-Za-z_][\w.]*)"
    for pattern, make in (
            (rf"^(?:an?\s+|the\s+)?product\s+of\s+{word}\s+and\s+{word}$", lambda a, b: f"product({a},{b})"),
            (rf"^(?:an?\s+|the\s+)?(?:interaction|cross)\s+(?:of|between)\s+{word}\s+and\s+{word}$",
             lambda a, b: f"product({a},{b})"),
            (rf"^{word}\s*(?:\*|x|times)\s*{word}$", lambda a, b: f"product({a},{b})"),
            (rf"^(?:an?\s+|the\s+)?ratio\s+of\s+{word}\s+(?:to|over)\s+{word}$", lambda a, b: f"ratio({a},{b})"),
            (rf"^{word}\s*(?:/|divided\s+by|per)\s*{word}$", lambda a, b: f"ratio({a},{b})"),
            (rf"^{word}\s+(?:in|into)\s+([2-9]|[1-9][0-9])\s+(?:quantile\s+)?buckets$",
             lambda a, n: f"bucket({a},{n})")):
        if (m := re.match(pattern, text, re.I)) is not None:
            return make(*m.groups())
    return None


def _add_derived(request: str, name: str, knob: str, root: Path, manifest: Manifest) -> Change:
    """Add the derived entry `name` (tools/derived.py) to `knob`, its inputs checked first."""
    derived = parse(name)
    assert derived is not None
    try:
        catalog = {f.name: f for f in load_catalog(root, manifest)}
    except UserError as exc:
        raise UnmappableRequest(f"{request!r}: a derived feature needs the feature catalog: {exc}") from None
    for part in derived.inputs:
        entry = catalog.get(part)
        if entry is None or entry.type != "numeric" or entry.leaky:
            numeric = sorted(n for n, f in catalog.items() if f.type == "numeric" and not f.leaky)
            why = ("is not in the feature catalog" if entry is None else "is marked leaky" if entry.leaky
                   else f"is {entry.type}, not numeric")
            raise UnmappableRequest(f"{request!r}: {part} {why}; {derived.op} takes numeric catalog features "
                                    f"({', '.join(numeric)})")
    current = read_knob(root, manifest.knobs[knob]) or []
    if name in current:
        raise UnmappableRequest(f"{request!r}: {knob} already has {name}; nothing to add")
    return Change(knob, [*current, name], f"add the derived feature {name} ({derived.describe()}) to {knob}")


def _knob_named(name: str, manifest: Manifest) -> str | None:
    wanted = _norm(name)
    return next((knob for knob in manifest.knobs if _norm(knob) == wanted), None)


def _norm(name: str) -> str:
    return " ".join(re.split(r"[\s_.-]+", name.strip().lower()))


def _looks_like_knob(name: str) -> bool:
    """A short name (one or two words) reads as a knob; "up a cross network" does not."""
    return len(_norm(name).split()) <= 2 and not _norm(name).startswith(("up ", "a ", "an "))


def _parse_value(knob: str, raw: str, manifest: Manifest) -> Any:
    spec = manifest.knobs[knob]
    text = raw.strip().strip("'\"")
    try:
        if spec.type == "float":
            return float(text)
        if spec.type == "int":
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
    except ValueError:
        raise UnmappableRequest(f"{knob} is a {spec.type} knob; {raw!r} is not a number") from None
    if spec.type == "bool":
        if text.lower() in TRUE | FALSE:
            return text.lower() in TRUE
        raise UnmappableRequest(f"{knob} is a bool knob; {raw!r} is not true or false")
    if spec.type == "categorical":
        match = [c for c in spec.choices or [] if str(c).lower() == text.lower()]
        if not match:
            raise UnmappableRequest(f"{knob} takes one of {', '.join(map(str, spec.choices or []))}; not {raw!r}")
        return match[0]
    raise UnmappableRequest(f"{knob} is a features knob: say \"add feature NAME\" or \"drop feature NAME\"")


def _groups(root: Path, manifest: Manifest) -> dict[str, str]:
    try:
        return {f.name: f.group for f in load_catalog(root, manifest)}
    except UserError:
        return {}


def _is_catalog_name(word: str, root: Path, manifest: Manifest) -> bool:
    return word in _groups(root, manifest)


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, list) and isinstance(new, list):
        return sorted(map(str, old)) == sorted(map(str, new))
    return old == new


def _show(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, list) else repr(value)

