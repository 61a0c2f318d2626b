"""`carfriend schema`: print the persona message's JSON Schema (docs/message.schema.json is its copy)."""

from __future__ import annotations

import argparse
import json

from agent.core.model import message_json_schema


def schema_text() -> str:
    return json.dumps(message_json_schema(), indent=2, ensure_ascii=False) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    print(schema_text(), end="")
    return 0
