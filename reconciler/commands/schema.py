"""`reconciler schema`: the Workflow JSON Schema, for editors and CI."""

from __future__ import annotations

import argparse
import sys

from reconciler.commands.common import Subcommands
from reconciler.manifest.jsonschema import workflow_schema_json


def register(sub: Subcommands) -> None:
    p = sub.add_parser("schema", help="print the Workflow JSON Schema")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    sys.stdout.write(workflow_schema_json())
    return 0
