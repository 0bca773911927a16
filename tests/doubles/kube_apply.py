"""Server-side apply and managedFields, for the API server double (kube_api.py).

What the real API server does (structured-merge-diff), simplified to the fields mlops sends:
- every field of an object is owned by one or more field managers, recorded in
  `metadata.managedFields` as {manager, operation (Apply|Update), apiVersion, time, fieldsType:
  FieldsV1, fieldsV1}; fieldsV1 nests `f:<field>` for map keys and `k:{"name":"x"}` for the items
  of an associative list (containers, env, volumes ... by their merge key);
- an apply (PATCH application/apply-patch+yaml, `?fieldManager=M[&force=true]`) merges the
  applied configuration into the object (maps merge, associative lists merge by key, other lists
  are atomic and replaced); a field it sets to a value other than the live one while another
  manager owns it is a conflict: 409 with reason Conflict and one FieldManagerConflict cause per
  field, unless `force`, which takes the field from the other manager; fields M applied before
  and no longer applies, and that no other manager owns, are removed from the object;
- any other write (POST, a JSON/merge/strategic patch) is an Update: the fields it changed move
  to its manager (`?fieldManager=`, else the client's User-Agent up to the first '/').
Not modelled: apiVersion conversion of field sets, sets (list-type set), granular maps,
ownership of parent maps, status subresource managers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from .kube_patch import MERGE_KEYS, ApiError, merge_patch, strategic_merge

Path = tuple[str, ...]
SKIP_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
}


def list_key(field: str, items: list[Any], crd: bool) -> str | None:
    """The merge key of an associative list (None: atomic). Custom resources' lists are atomic."""
    if crd or not items or not all(isinstance(i, dict) for i in items):
        return None
    if field == "ports" and "port" in items[0]:  # a Service's ports (the real key is port + protocol)
        return "port"
    return MERGE_KEYS.get(field)


def item_key(key: str, item: dict[str, Any]) -> str:
    return "k:" + json.dumps({key: item.get(key)}, separators=(",", ":"))


def fields(obj: dict[str, Any], crd: bool = False) -> set[Path]:
    """The field paths an object (or an applied configuration) sets: leaves, and associative list items."""
    top = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    meta = {k: v for k, v in (top.pop("metadata", None) or {}).items() if k not in SKIP_META}
    if meta:
        top["metadata"] = meta
    return _walk(top, (), crd)


def _walk(obj: dict[str, Any], prefix: Path, crd: bool) -> set[Path]:
    out: set[Path] = set()
    for k, v in obj.items():
        path = prefix + (f"f:{k}",)
        if isinstance(v, dict) and v:
            out |= _walk(v, path, crd)
        elif isinstance(v, list) and (key := list_key(k, v, crd)):
            for item in v:
                ipath = path + (item_key(key, item),)
                out.add(ipath)
                out |= _walk(item, ipath, crd)
        else:
            out.add(path)
    return out


def get(obj: Any, path: Path) -> tuple[bool, Any]:
    node = obj
    for part in path:
        if part.startswith("f:") and isinstance(node, dict) and part[2:] in node:
            node = node[part[2:]]
        elif part.startswith("k:") and isinstance(node, list):
            ((key, value),) = json.loads(part[2:]).items()
            node = next((i for i in node if isinstance(i, dict) and i.get(key) == value), _MISSING)
            if node is _MISSING:
                return False, None
        else:
            return False, None
    return True, node


_MISSING = object()


def remove(obj: dict[str, Any], path: Path) -> None:
    """Delete the field (or the list item) at path, then maps and lists it leaves empty."""
    chain: list[tuple[Any, str]] = []
    node: Any = obj
    for part in path:
        chain.append((node, part))
        found, node = get(node, (part,))
        if not found:
            return
    for parent, part in reversed(chain):
        if part.startswith("f:"):
            parent.pop(part[2:], None)
        else:
            ((key, value),) = json.loads(part[2:]).items()
            parent[:] = [i for i in parent if not (isinstance(i, dict) and i.get(key) == value)]
        if parent or parent is obj:
            return
        # the parent is empty now: remove it from its own parent on the next round


def to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        if path and path[-1].startswith("k:"):
            node.setdefault(".", {})
    return tree


def from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for part, sub in tree.items():
        if part == ".":
            out.add(prefix)
            continue
        path = prefix + (part,)
        if sub:
            out |= from_fields_v1(sub, path)
        else:
            out.add(path)
    return out


def dotted(path: Path) -> str:
    """`.spec.template.spec.containers[name="server"].image`, as the API server names a field."""
    text = ""
    for part in path:
        if part.startswith("f:"):
            text += "." + part[2:]
        else:
            ((key, value),) = json.loads(part[2:]).items()
            text += f"[{key}={json.dumps(value)}]"
    return text


class Managers:
    """An object's managedFields as (manager, operation) -> (apiVersion, set of paths)."""

    def __init__(self, obj: dict[str, Any]):
        self.entries: dict[tuple[str, str], tuple[str, set[Path]]] = {}
        for e in (obj.get("metadata") or {}).get("managedFields") or []:
            self.entries[(e["manager"], e["operation"])] = (
                e.get("apiVersion", ""),
                from_fields_v1(e.get("fieldsV1") or {}),
            )

    def others(self, manager: str) -> list[tuple[tuple[str, str], tuple[str, set[Path]]]]:
        return [(who, e) for who, e in self.entries.items() if who != (manager, "Apply")]

    def owned_by_others(self, manager: str) -> set[Path]:
        return set().union(*(paths for _, (_, paths) in self.others(manager)))

    def set(self, who: tuple[str, str], api_version: str, paths: set[Path]) -> None:
        if paths:
            self.entries[who] = (api_version, set(paths))
        else:
            self.entries.pop(who, None)

    def drop(self, paths: set[Path], keep: tuple[str, str] | None = None) -> None:
        for who, (version, owned) in list(self.entries.items()):
            if who != keep:
                self.set(who, version, owned - paths)

    def store(self, obj: dict[str, Any], now: str) -> dict[str, Any]:
        obj.setdefault("metadata", {})["managedFields"] = [
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": version,
                "time": now,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(paths),
            }
            for (manager, operation), (version, paths) in self.entries.items()
            if paths
        ]
        return obj


def conflicts(live: dict[str, Any], applied: dict[str, Any], manager: str, crd: bool) -> list[tuple[str, str, Path]]:
    """(other manager, its apiVersion, path) for each field the apply would change that another manager owns."""
    managers = Managers(live)
    new = fields(applied, crd)
    found = []
    for (other, _), (version, owned) in managers.others(manager):
        for path in sorted(owned & new):
            if path[-1].startswith("k:"):
                continue  # an associative list item's existence is shared, not a value
            there, value = get(live, path)
            if there and value != get(applied, path)[1]:
                found.append((other, version, path))
    return found


def merge_applied(
    live: dict[str, Any],
    applied: dict[str, Any],
    manager: str,
    api_version: str,
    force: bool,
    crd: bool,
    merge: Any,
    now: str,
) -> dict[str, Any]:
    """The object after `manager` applies `applied` (conflicts already checked); managedFields updated."""
    managers = Managers(live)
    new_paths = fields(applied, crd)
    if force:
        managers.drop(new_paths, keep=(manager, "Apply"))
    _, before = managers.entries.get((manager, "Apply"), ("", set()))
    others = managers.owned_by_others(manager)
    body = {k: v for k, v in applied.items() if k not in ("apiVersion", "kind", "status")}
    body["metadata"] = {k: v for k, v in (applied.get("metadata") or {}).items() if k not in SKIP_META}
    result = merge(copy.deepcopy(live), body)
    kept = others | new_paths
    removed: list[Path] = []
    for path in sorted(before - kept, key=len):  # an item before its fields: the whole item goes
        if any(path[: len(r)] == r for r in removed):
            continue
        if not any(p[: len(path)] == path for p in kept if len(p) > len(path)):  # nobody owns part of it
            remove(result, path)
            removed.append(path)
    managers.set((manager, "Apply"), api_version, new_paths)
    return managers.store(result, now)


def update(
    live: dict[str, Any] | None, new: dict[str, Any], manager: str, api_version: str, crd: bool, now: str
) -> dict[str, Any]:
    """An Update by `manager` (create or non-apply patch): the fields it changed become its own."""
    managers = Managers(live) if live is not None else Managers({})
    after = fields(new, crd)
    changed = {p for p in after if live is None or get(live, p) != get(new, p)}
    managers.drop(changed)
    managers.drop({p for _, (_, owned) in list(managers.entries.items()) for p in owned if p not in after})
    _, mine = managers.entries.get((manager, "Update"), ("", set()))
    managers.set((manager, "Update"), api_version, (mine | changed) & after)
    return managers.store(new, now)


class ServerSideApply:
    """The double's server-side apply verb (mixed into KubeApiDouble, whose objects, create and clock it uses)."""

    APPLY = "application/apply-patch+yaml"
    objects: dict[tuple[str, str, str, str], dict[str, Any]]
    user_agent: str

    def _manager(self, query: dict[str, list[str]], verb: str, content_type: str) -> str:
        """?fieldManager=, required for an apply; for other writes the User-Agent up to its first '/'."""
        manager = query.get("fieldManager", [""])[0]
        if "force" in query and content_type != self.APPLY:
            raise ApiError(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io is invalid: force: Forbidden: may not be specified for non-apply patch",
            )
        if content_type == self.APPLY and verb == "patch" and not manager:
            raise ApiError(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value: is required for apply patch",
            )
        return manager or (self.user_agent.split("/")[0] or "unknown")

    def apply(
        self,
        key: tuple[str, str, str, str],
        api_version: str,
        kind: str,
        resource: str,
        body: Any,
        manager: str,
        force: bool,
    ) -> tuple[int, dict[str, Any]]:
        """Server-side apply: create when absent; else merge, 409 on another manager's field unless forced."""
        name = key[3]
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "error decoding YAML: the applied configuration is not an object")
        if (body.get("apiVersion"), body.get("kind")) != (api_version, kind):
            raise ApiError(
                400,
                "BadRequest",
                f"the applied configuration's apiVersion/kind "
                f"{body.get('apiVersion')}/{body.get('kind')} is not {api_version}/{kind}",
            )
        if (body.get("metadata") or {}).get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        crd = self._crd(key)
        live = self.objects.get(key)
        if live is None:
            created = self.create(key, api_version, kind, body)
            managers = Managers({})
            managers.set((manager, "Apply"), api_version, fields(body, crd))
            managers.store(created, self.now())
            return 201, created
        found = conflicts(live, body, manager, crd)
        if found and not force:
            causes = [
                {
                    "reason": "FieldManagerConflict",
                    "message": f'conflict with "{who}" using {version}',
                    "field": dotted(path),
                }
                for who, version, path in found
            ]
            lines = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
            raise ApiError(
                409,
                "Conflict",
                f"Apply failed with {len(found)} conflict{'s' if len(found) > 1 else ''}: "
                + (f"{causes[0]['message']}: {causes[0]['field']}" if len(found) == 1 else "\n" + lines),
                {"name": name, "group": key[0], "kind": key[1], "causes": causes},
            )
        precondition = (body.get("metadata") or {}).get("resourceVersion")
        if precondition and precondition != live["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": key[0], "kind": key[1]},
            )
        merge = merge_patch if crd else strategic_merge
        new = merge_applied(live, body, manager, api_version, force, crd, merge, self.now())
        if kind == "Deployment":
            new["spec"].setdefault("replicas", 1)  # defaulting, as the API server does for a removed field
        for fixed in ("uid", "namespace", "name", "creationTimestamp", "generation", "resourceVersion"):
            new["metadata"][fixed] = live["metadata"].get(fixed)
        if kind == "Deployment" and new["spec"].get("selector") != live["spec"].get("selector"):
            raise ApiError(
                422, "Invalid", f'Deployment.apps "{name}" is invalid: spec.selector: Invalid value: field is immutable'
            )
        if new.get("spec") != live.get("spec"):
            new["metadata"]["generation"] = live["metadata"]["generation"] + 1
        if "status" in live:
            new["status"] = live["status"]
        if new != live:
            self._stamp(new)
        self.objects[key] = new
        return 200, new
