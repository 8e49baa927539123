"""The order the checks run in; stops early only when the config cannot be read (nothing else can be checked)."""

from __future__ import annotations

import argparse
from typing import Callable

from p2p_fast.app.doctor import dial, local, running
from p2p_fast.app.doctor.report import PROBLEM, Check


async def run_checks(args: argparse.Namespace, emit: Callable[[Check], None]) -> None:
    cfg, psk, check = local.check_config(args.config)
    emit(check)
    if cfg is None or check.status == PROBLEM:
        return
    url = running.find_api(cfg, args.api)
    emit(local.check_listen_port(cfg, url))
    timeout = args.timeout or min(cfg.network.connection_timeout, 10.0)
    async with dial.probe_host(cfg, psk) as host:
        for check in await dial.check_bootstrap_peers(host, cfg, psk, timeout):
            emit(check)
        for check in await dial.check_relays(host, cfg, psk, timeout):
            emit(check)
    emit(await local.check_mdns(cfg))
    for check in await running.check_running_node(cfg, url, args.max_clock_skew):
        emit(check)
