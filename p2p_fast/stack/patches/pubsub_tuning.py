"""``tune_pubsub``: the seven pubsub patches that put our hot paths into py-libp2p's Pubsub and take per-message work
off it that a profile showed, applied together to the Pubsub we build (``p2p_fast.stack.pubsub``).

Not a patch itself: each hook is its own patch module, with the upstream limit in its docstring and its own test
(``tests/stack/patches/test_pubsub_<hook>.py``, stock next to patched):

1. ``pubsub_message_ids`` -- message ids computed once per message; our seen and validation caches (per-instance);
2. ``pubsub_local_record`` -- our signed peer record built once, re-checked every ``ADDRS_RECHECK_S``;
3. ``pubsub_peer_records`` -- a peer's signed record verified once per record bytes;
4. ``pubsub_own_signature`` -- a publisher does not verify the signature it just made (per-instance);
5. ``pubsub_signer_keys`` -- signers' keys decoded once per sender (every Pubsub of the process);
6. ``pubsub_batched_sending`` -- queued publishes leave in one RPC (per-instance);
7. ``pubsub_subscription_buffer`` -- a subscription buffer that holds a burst (every Pubsub of the process).

The process-wide parts of 2, 3, 5 and 7 are applied by ``p2p_fast.stack.patches.apply_all`` (from host
construction); :meth:`_Tuning.tune_records` refuses to run before them. Hooks 2 and 3 act only for hosts registered
here; 5 and 7 act for every Pubsub of the process (see their modules).
"""

from __future__ import annotations

from typing import Any

from p2p_fast.stack.patches import (
    pubsub_batched_sending,
    pubsub_local_record,
    pubsub_message_ids,
    pubsub_own_signature,
    pubsub_peer_records,
    pubsub_signer_keys,
    pubsub_subscription_buffer,
)

#: the process-wide halves tune_records needs (registered in p2p_fast.stack.patches.PROCESS_WIDE)
PROCESS_WIDE_PARTS = (pubsub_local_record, pubsub_peer_records, pubsub_signer_keys, pubsub_subscription_buffer)


class _Tuning:
    def constructor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Pubsub(...)`` (hook 1: the message-id function)."""
        return pubsub_message_ids.constructor_kwargs()

    def after_construct(self, pubsub: Any, seen_ttl: float) -> None:
        """Hooks 1-7 for a Pubsub built with :meth:`constructor_kwargs`."""
        pubsub_message_ids.replace_caches(pubsub, seen_ttl)
        self.tune_records(pubsub)

    def tune_records(self, pubsub: Any) -> None:
        """Hooks 2-7 for this pubsub and its host (the process-wide parts must be applied)."""
        if not all(part.PATCH.is_applied() for part in PROCESS_WIDE_PARTS):
            raise RuntimeError("pubsub tuning needs py-libp2p's pubsub module hooks: call "
                               "p2p_fast.stack.patches.apply_all() first (p2p_fast.stack.host.build_host does)")
        pubsub_batched_sending.batch_sending(pubsub)
        host = pubsub.host
        pubsub_local_record.cache_local_record(host)
        pubsub_peer_records.cache_peer_records(host)
        pubsub_own_signature.record_own_signatures(pubsub)


tune_pubsub = _Tuning()
