"""Which cluster a command talks to, and, when it cannot, one sentence saying why.

The official client answers a missing file, an unknown context and a malformed file alike
("Invalid kube-config file. No configuration found.") or with a YAML traceback; these
checks run first and name the file, the context and the fix, as kubectl does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

API_CONNECTIONS = 32  # at most this many open to the API server at rest


class KubeconfigError(ValueError):
    """The kubeconfig cannot be used; the message names the file and what to do."""


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """In-cluster config when running as a Pod (and neither flag is given), else the
    kubeconfig: --kubeconfig, $KUBECONFIG, ~/.kube/config, in that order."""
    configuration = k8s.Configuration()
    # Keep-alive connections to the API server, shared by every step and checkpoint write.
    # The client's default (5 per CPU) is below the number of requests in flight under
    # load, and each request beyond the pool opens and then throws away a TLS connection.
    configuration.connection_pool_maxsize = API_CONNECTIONS
    if kubeconfig is None and context is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            return k8s.ApiClient(configuration)
        except k8s_config.ConfigException:
            pass
    files = _files(kubeconfig)
    check_kubeconfig(files, context)
    try:
        k8s_config.load_kube_config(
            config_file=os.pathsep.join(map(str, files)),
            context=context,
            client_configuration=configuration,
        )
    except (k8s_config.ConfigException, OSError, ValueError) as err:
        raise KubeconfigError(f"kubeconfig {_names(files)}: {err}") from err
    return k8s.ApiClient(configuration)


def server_of(api: k8s.ApiClient) -> str:
    return str(api.configuration.host)


def _files(kubeconfig: str | None) -> list[Path]:
    if kubeconfig is not None:
        return [Path(kubeconfig)]
    listed = os.environ.get("KUBECONFIG", "")
    if listed.strip():
        return [Path(p) for p in listed.split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def _names(files: list[Path]) -> str:
    return ", ".join(map(str, files))


def check_kubeconfig(files: list[Path], context: str | None) -> None:
    """Raise KubeconfigError for what the client would refuse, in words that fix it."""
    existing = [f for f in files if f.is_file()]
    if not existing:
        raise KubeconfigError(
            f"no kubeconfig: {_names(files)} does not exist. Give --kubeconfig FILE or set"
            " KUBECONFIG (outside a pod there is no in-cluster configuration)"
        )
    contexts: list[str] = []
    current = None
    for file in existing:
        doc = _read(file)
        contexts += [
            str(c.get("name")) for c in doc.get("contexts") or [] if isinstance(c, dict)
        ]
        current = current or doc.get("current-context") or None
    known = ", ".join(contexts) or "none"
    wanted = context or current
    if not contexts:
        raise KubeconfigError(f"kubeconfig {_names(existing)} defines no context")
    if wanted is None:
        raise KubeconfigError(
            f"kubeconfig {_names(existing)} has no current-context: give --context"
            f" (its contexts: {known})"
        )
    if wanted not in contexts:
        flag = "--context" if context else "its current-context"
        raise KubeconfigError(
            f"context {wanted!r} ({flag}) is not in kubeconfig {_names(existing)};"
            f" its contexts: {known}"
        )


def _read(file: Path) -> dict[str, Any]:
    try:
        doc = YAML(typ="safe", pure=True).load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise KubeconfigError(f"kubeconfig {file}: cannot read it: {err}") from err
    except MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        raise KubeconfigError(f"kubeconfig {where}: not valid YAML: {err.problem}") from err
    except YAMLError as err:
        raise KubeconfigError(f"kubeconfig {file}: not valid YAML: {err}") from err
    if doc is None:
        raise KubeconfigError(f"kubeconfig {file} is empty")
    if not isinstance(doc, dict):
        raise KubeconfigError(f"kubeconfig {file}: expected a mapping (kind: Config)")
    return doc
