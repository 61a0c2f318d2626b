"""`carfriend relay`: run the relay or manage its vehicles and users (parses args; imports lazily)."""

from __future__ import annotations

import argparse
from pathlib import Path

ROLE_CHOICES = ("owner", "family", "dealer", "operator")


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("relay", help="the cloud relay: web app + MQTT ingest; manage its users",
                       description="Without an action: run the relay (web app and MQTT ingest).")
    p.add_argument("--config", "-c", type=Path, help="relay config (TOML); defaults when omitted")
    p.set_defaults(func=cmd_serve)
    actions = p.add_subparsers(dest="relay_action", metavar="ACTION")

    a = actions.add_parser("serve", help="run the relay (the default)")
    a.set_defaults(func=cmd_serve)

    a = actions.add_parser("migrate", help="create or upgrade the database schema")
    a.set_defaults(func=cmd_migrate)

    a = actions.add_parser("add-vehicle", help="register vehicles (ids as the cars publish them)")
    a.add_argument("vehicle_ids", nargs="+", metavar="VEHICLE_ID")
    a.add_argument("--name", default="", help="display name")
    a.add_argument("--public-feed", action="store_true", help="publish its public messages at /public/ID")
    a.add_argument("--generate-key", action="store_true",
                   help="write a new command key to <keys dir>/<id>.key when there is none")
    a.set_defaults(func=cmd_add_vehicle)

    a = actions.add_parser("add-user", help="create a user (password from a prompt or stdin)")
    a.add_argument("username")
    a.add_argument("--display-name", default="")
    a.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    a.add_argument("--role", choices=ROLE_CHOICES, help="also grant this role")
    _vehicle_target(a, required=False)
    a.set_defaults(func=cmd_add_user)

    for name, helptext in (("grant", "give a user a role on a vehicle"),
                           ("revoke", "take a role away")):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("username")
        a.add_argument("role", choices=ROLE_CHOICES)
        _vehicle_target(a, required=True)
        a.set_defaults(func=cmd_grant if name == "grant" else cmd_revoke)

    a = actions.add_parser("passwd", help="set a user's password (logs out their sessions)")
    a.add_argument("username")
    a.add_argument("--password-stdin", action="store_true")
    a.set_defaults(func=cmd_passwd)

    a = actions.add_parser("list", help="list vehicles, users and roles")
    a.set_defaults(func=cmd_list)

    a = actions.add_parser("export", help="write everything kept about a vehicle (JSON, or "
                                          "CSV files in a ZIP)")
    a.add_argument("--vehicle", required=True, metavar="ID")
    a.add_argument("--format", choices=("json", "csv"), default="json")
    a.add_argument("--output", "-o", type=Path, help="file to write (default: stdout for json)")
    a.set_defaults(func=cmd_export)

    a = actions.add_parser("purge", help="delete a vehicle's history (messages and their "
                                         "notifications, state, commands, appointments, fleet "
                                         "reports); recorded in the export's purges")
    a.add_argument("--vehicle", required=True, metavar="ID")
    a.add_argument("--yes", action="store_true", help="do not ask to type the id again")
    a.set_defaults(func=cmd_purge)

    a = actions.add_parser("prune", help="apply [retention] now: delete old rows, thin the "
                                         "state history (the relay also does it on a schedule)")
    a.set_defaults(func=cmd_prune)

    from relay.fleet_sim import add_fleet_sim
    add_fleet_sim(sub)



def _vehicle_target(a: argparse.ArgumentParser, required: bool) -> None:
    g = a.add_mutually_exclusive_group(required=required)
    g.add_argument("--vehicle", metavar="ID", help="the vehicle")
    g.add_argument("--all-vehicles", action="store_true", help="every vehicle (operators)")


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from relay.config import load_config
    return load_config(args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    from relay.server import Relay
    Relay(_config(args)).run()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from relay.admin import open_db
    open_db(_config(args)).close()
    print("database schema is up to date")
    return 0


def cmd_add_vehicle(args: argparse.Namespace) -> int:
    from relay.admin import add_vehicles, open_db
    config = _config(args)
    with open_db(config) as s:
        for line in add_vehicles(s, config, args.vehicle_ids, args.name, args.public_feed,
                                 args.generate_key):
            print(line)
    return 0


def cmd_add_user(args: argparse.Namespace) -> int:
    from relay.admin import AdminError, add_user, grant, open_db, read_password
    if args.role and not (args.vehicle or args.all_vehicles):
        raise AdminError("--role needs --vehicle ID or --all-vehicles")
    with open_db(_config(args)) as s:
        add_user(s, args.username, read_password(args), args.display_name)
        if args.role:
            grant(s, args.username, args.role, args.vehicle)
    print(f"user {args.username} created")
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    from relay.admin import grant, open_db
    with open_db(_config(args)) as s:
        grant(s, args.username, args.role, args.vehicle)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from relay.admin import open_db, revoke
    with open_db(_config(args)) as s:
        revoke(s, args.username, args.role, args.vehicle)
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    from relay.admin import open_db, read_password, set_password
    with open_db(_config(args)) as s:
        set_password(s, args.username, read_password(args))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from relay.admin import listing, open_db
    with open_db(_config(args)) as s:
        print("\n".join(listing(s)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import sys

    from relay.admin import AdminError, open_db
    from relay.privacy import export_vehicle, to_csv_zip, to_json
    with open_db(_config(args)) as s:
        try:
            data = export_vehicle(s, args.vehicle)
        except KeyError:
            raise AdminError(f"unknown vehicle {args.vehicle!r}") from None
    body = to_csv_zip(data) if args.format == "csv" else to_json(data)
    if args.output is None:
        if args.format == "csv":
            raise AdminError("--format csv writes a ZIP: give --output FILE")
        sys.stdout.buffer.write(body + b"\n")
    else:
        args.output.write_bytes(body)
        print(f"{args.vehicle}: {len(body)} bytes written to {args.output}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    import getpass

    from relay.admin import AdminError, open_db
    from relay.privacy import purge_vehicle
    if not args.yes and input(f"Type {args.vehicle} to delete its history: ").strip() \
            != args.vehicle:
        raise AdminError("not confirmed: nothing deleted")
    with open_db(_config(args)) as s:
        try:
            deleted = purge_vehicle(s, args.vehicle, by=f"operator {getpass.getuser()} (cli)")
        except KeyError:
            raise AdminError(f"unknown vehicle {args.vehicle!r}") from None
        s.commit()
    print(f"{args.vehicle}: " + ", ".join(f"{k} {v}" for k, v in deleted.items()) + " deleted")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from relay.admin import open_sessions
    from relay.models import utcnow
    from relay.retention import Pruner
    config = _config(args)
    counts = Pruner(open_sessions(config), config.retention).prune(utcnow())
    print(", ".join(f"{k}: {v} deleted" for k, v in counts.items()) or "nothing to delete")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`carfriend-relay ...` is `carfriend relay ...`."""
    import sys

    from agent.cli import main as carfriend_main

    return carfriend_main(["relay", *(sys.argv[1:] if argv is None else argv)])
