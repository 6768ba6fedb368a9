/*
 * An independent VDA 5050 2.0 master control built on vda-5050-lib's MasterController
 * (coatyio/Siemens), for shopfloor's interoperability test: it drives one vehicle of
 * shopfloor's AgvFleetSimulator.
 *
 *   node master.js <brokerUrl> <interfaceName> <manufacturer> <serialNumber>
 *
 * Waits for the vehicle to be ONLINE, then initiates the instant action startPause and,
 * once that is FINISHED, stopPause; finally assigns a two-node order (A1 → A2 of the
 * simulator's hall) and waits until it is processed. The library validates every state
 * message it receives against the VDA 5050 JSON schemas. Prints JSON lines to stdout:
 * {"event": "online" | "actionState" | "actionError" | "nodeTraversed" | "orderProcessed"
 * | "done", ...}. Exits 0 when done, 1 on error.
 */
"use strict";

const { MasterController, BlockingType } = require("vda-5050-lib");

const [brokerUrl, interfaceName, manufacturer, serialNumber] = process.argv.slice(2);
if (!serialNumber) {
    console.error("usage: node master.js <brokerUrl> <interfaceName> <manufacturer> <serialNumber>");
    process.exit(2);
}
const agvId = { manufacturer, serialNumber };
const out = (event, data) => process.stdout.write(JSON.stringify({ event, ...data }) + "\n");

const mc = new MasterController(
    { interfaceName, transport: { brokerUrl, heartbeat: 5, reconnectPeriod: 500 }, vdaVersion: "2.0.0" },
    {},
);

function instantAction(actionType) {
    return new Promise((resolve, reject) => {
        const actionId = mc.createUuid();
        mc.initiateInstantActions(
            agvId,
            { instantActions: [{ actionId, actionType, blockingType: BlockingType.Hard }] },
            {
                onActionStateChanged: (actionState, withError, action, _agvId, state) => {
                    out("actionState", { actionId, actionType, actionState, paused: state.paused, withError: withError ? String(withError.message || withError) : null });
                    if (actionState.actionStatus === "FINISHED") resolve(state);
                    else if (actionState.actionStatus === "FAILED") reject(new Error(`${actionType} FAILED`));
                },
                onActionError: (error, action) => {
                    out("actionError", { actionId, actionType, error: String(error && error.message ? error.message : error) });
                    reject(error);
                },
            },
        ).catch(reject);
    });
}

function order() {
    const orderId = mc.createUuid();
    const nodes = [
        { nodeId: "A1", sequenceId: 0, released: true, nodePosition: { x: 0, y: 0, mapId: "hall-1" }, actions: [] },
        { nodeId: "A2", sequenceId: 2, released: true, nodePosition: { x: 5, y: 0, mapId: "hall-1" }, actions: [] },
    ];
    const edges = [{ edgeId: "A1-A2", sequenceId: 1, startNodeId: "A1", endNodeId: "A2", released: true, actions: [] }];
    return new Promise((resolve, reject) => {
        mc.assignOrder(agvId, { orderId, orderUpdateId: 0, nodes, edges }, {
            onOrderProcessed: (withError, byCancelation, active, ctx) => {
                out("orderProcessed", { orderId, withError: withError ? String(withError.message || withError) : null, byCancelation, active, lastNodeId: ctx.state.lastNodeId });
                if (withError) reject(withError);
                else resolve(ctx.state);
            },
            onNodeTraversed: (node) => out("nodeTraversed", { orderId, nodeId: node.nodeId }),
        }).catch(reject);
    });
}

async function main() {
    await mc.start();
    await new Promise((resolve) => {
        mc.trackAgvs((id, connectionState) => {
            if (id.serialNumber === serialNumber && connectionState === "ONLINE") {
                out("online", { serialNumber });
                resolve();
            }
        });
    });
    await instantAction("startPause");
    await instantAction("stopPause");
    await order();
    out("done", {});
    await mc.stop();
    process.exit(0);
}

const kill = async () => {
    try { await mc.stop(); } catch { /* exiting anyway */ }
    process.exit(1);
};
process.on("SIGTERM", kill);
process.on("SIGINT", kill);
main().catch(async (err) => {
    out("error", { error: String(err && err.message ? err.message : err) });
    try { await mc.stop(); } catch { /* exiting anyway */ }
    process.exit(1);
});
