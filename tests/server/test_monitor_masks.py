"""Monitor masks: DBE_VALUE, DBE_ALARM and DBE_PROPERTY select what a subscriber gets."""

from __future__ import annotations

import asyncio

from peers import server_config
from waiting import run, until

from caioc.ca import ChannelType, SubscriptionMask
from caioc.client import ClientConfig, Context, Reading
from caioc.server import ChannelDouble, Server


def test_masks_select_value_alarm_and_property_updates() -> None:
    async def scenario() -> None:
        data = ChannelDouble(value=0.0, units="V", upper_warning_limit=5.0, upper_alarm_limit=8.0)
        server = Server({"X": data}, server_config())
        await server.start()
        try:
            client = ClientConfig(search_addresses=[("127.0.0.1", server.tcp_port)])
            async with Context(client) as ctx:
                (x,) = await ctx.connect("X")
                seen: dict[str, list[Reading]] = {"value": [], "alarm": [], "property": []}
                masks = {
                    "value": SubscriptionMask.VALUE,
                    "alarm": SubscriptionMask.ALARM,
                    "property": SubscriptionMask.PROPERTY,
                }
                subscriptions = [
                    await x.subscribe(
                        ChannelType.CTRL_DOUBLE, mask=mask, callback=seen[kind].append
                    )
                    for kind, mask in masks.items()
                ]
                # each subscription starts with the current value: wait for it
                for subscription in subscriptions:
                    await asyncio.wait_for(subscription.queue.get(), 5)
                for value in (1.0, 2.0, 6.0, 7.0, 9.0, 1.0):
                    await data.set(value)
                data.units = "mV"
                await data.set(1.5)
                # Sentinels every subscription gets: the updates of one circuit
                # arrive in order, so once they are in, nothing else is on its way.
                data.units = "uV"
                await data.set(100.0)

                def settled() -> bool:
                    return (
                        bool(seen["property"])
                        and seen["property"][-1].metadata["units"] == "uV"
                        and all(
                            seen[kind] and seen[kind][-1].value == 100.0
                            for kind in ("value", "alarm")
                        )
                    )

                await until(settled, "the sentinel updates")
                for kind in ("value", "alarm"):
                    assert seen[kind].pop().value == 100.0
                assert seen["property"].pop().metadata["units"] == "uV"
                # every subscription starts with the current value
                assert [r.value for r in seen["value"]] == [0.0, 1, 2, 6, 7, 9, 1, 1.5]
                # alarm changes only: into MINOR at 6, MAJOR at 9, back to none at 1
                assert [r.value for r in seen["alarm"]] == [0.0, 6.0, 9.0, 1.0]
                assert [r.severity for r in seen["alarm"]] == [0, 1, 2, 0]
                # property changes only: the units
                assert [r.metadata["units"] for r in seen["property"]] == ["V", "mV"]
        finally:
            await server.stop()

    run(scenario)
