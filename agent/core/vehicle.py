"""A resolved vehicle: its config, DBCs and decode plans, ready to run (no IO).

agent.profile.vehicle builds it from the files (load_vehicle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cantools.database.can import Database, Message

from agent.core.decode import Decoder, MessagePlan
from agent.core.diag_plan import DiagProfile
from agent.core.settings import AgentConfig
from agent.core.state import VehicleState


@dataclass
class Vehicle:
    """Everything the pipeline needs to know about one car, ready to run."""

    config: AgentConfig
    databases: list[Database]
    plans: dict[int, MessagePlan]
    stale_after: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    diagnostics: DiagProfile | None = None

    @property
    def mapped_paths(self) -> frozenset[str]:
        return frozenset(self.stale_after)

    def new_decoder(self) -> Decoder:
        clear_after = self.config.rules.dtc_new.clear_after_s
        if self.diagnostics is not None:  # polled codes are re-read every dtc_period_s, not broadcast
            clear_after = max(clear_after, 2.5 * self.diagnostics.config.dtc_period_s)
        state = VehicleState(self.stale_after, clear_after)
        # Fresh plans per decoder: the change cache lives in them.
        plans = {fid: _copy_plan(p) for fid, p in self.plans.items()}
        return Decoder(plans, state)

    def can_filters(self) -> list[dict[str, int | bool]] | None:
        """python-can filters passing only the mapped ids (kernel filters on SocketCAN).

        With diagnostics the response ids pass too; a car with no broadcast mapping at all gets
        no filter: any frame of its own is what tells the poller that it is awake.
        """
        filters: list[dict[str, int | bool]] = [
            {"can_id": fid, "can_mask": 0x1FFFFFFF if p.message.is_extended_frame else 0x7FF,
             "extended": p.message.is_extended_frame}
            for fid, p in sorted(self.plans.items())
        ]
        if self.diagnostics is None:
            return filters
        if not filters:
            return None
        for rx in sorted(self.diagnostics.response_ids() | set(self.diagnostics.config.awake_ids)):
            ext = rx > 0x7FF
            filters.append({"can_id": rx, "can_mask": 0x1FFFFFFF if ext else 0x7FF, "extended": ext})
        return filters

    def find_message(self, name: str) -> Message | None:
        for db in self.databases:
            try:
                return db.get_message_by_name(name)
            except KeyError:
                continue
        return None


def _copy_plan(plan: MessagePlan) -> MessagePlan:
    return MessagePlan(plan.frame_id, plan.message, plan.length, plan.mask, plan.signals,
                       plan.compiled, plan.big_endian, plan.mux, plan.mux_pages, plan.per_signal)
