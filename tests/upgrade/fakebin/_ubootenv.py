"""Fake libubootenv tools: the real fw_env.config and CRC32-prefixed environment format.

Invoked as ``fw_printenv`` or ``fw_setenv`` (symlinks/wrappers); tests only.
"""

from __future__ import annotations

import os
import sys
import zlib


def _config(args: list[str]) -> tuple[str, int, int, list[str]]:
    path = "/etc/fw_env.config"
    if len(args) >= 2 and args[0] == "-c":
        path, args = args[1], args[2:]
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                fields = line.split()
                return fields[0], int(fields[1], 0), int(fields[2], 0), args
    sys.exit("fw_env: no device in config")


def _load(device: str, offset: int, size: int) -> dict[str, str]:
    try:
        with open(device, "rb") as handle:
            handle.seek(offset)
            block = handle.read(size)
    except FileNotFoundError:
        block = b""
    if len(block) != size or zlib.crc32(block[4:]) != int.from_bytes(block[:4], "little"):
        print("Warning: Bad CRC, using default environment", file=sys.stderr)
        return {}
    env: dict[str, str] = {}
    for entry in block[4:].split(b"\0"):
        if not entry:
            break
        name, _, value = entry.decode().partition("=")
        env[name] = value
    return env


def _store(device: str, offset: int, size: int, env: dict[str, str]) -> None:
    data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()) + b"\0"
    if len(data) > size - 4:
        sys.exit("Error: environment overflow")
    data = data.ljust(size - 4, b"\xff")
    block = zlib.crc32(data).to_bytes(4, "little") + data
    mode = "r+b" if os.path.exists(device) else "wb"
    with open(device, mode) as handle:
        handle.seek(offset)
        handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())


def printenv(argv: list[str]) -> int:
    device, offset, size, args = _config(argv)
    value_only = bool(args) and args[0] == "-n"
    names = args[1:] if value_only else args
    env = _load(device, offset, size)
    if not names:
        for name, value in env.items():
            print(f"{name}={value}")
        return 0
    status = 0
    for name in names:
        if name not in env:
            print(f'## Error: "{name}" not defined', file=sys.stderr)
            status = 1
        elif value_only:
            print(env[name])
        else:
            print(f"{name}={env[name]}")
    return status


def setenv(argv: list[str]) -> int:
    device, offset, size, args = _config(argv)
    env = _load(device, offset, size)
    if args and args[0] == "-s":
        with open(args[1]) as handle:
            lines = [line.rstrip("\n") for line in handle]
        updates = [line.split(None, 1) for line in lines if line.strip() and line[0] != "#"]
    elif args:
        updates = [[args[0], " ".join(args[1:])] if len(args) > 1 else [args[0]]]
    else:
        print("Usage: fw_setenv [-c config] [-s script] name [value ...]", file=sys.stderr)
        return 1
    for update in updates:
        if len(update) == 1 or update[1] == "":
            env.pop(update[0], None)
        else:
            env[update[0]] = update[1]
    _store(device, offset, size, env)
    return 0
