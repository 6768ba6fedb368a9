/*
 * An independent VDA 5050 2.0 vehicle built on vda-5050-lib's AgvClient (coatyio/Siemens),
 * for shopfloor's interoperability test (tests/interop/test_vda5050_interop.py).
 *
 *   node vehicle.js <brokerUrl> <interfaceName> <manufacturer> <serialNumber>
 *
 * Publishes connection ONLINE (retained, by the library), then a state message every 200 ms
 * with known values (battery 87.5 %, position x=12.25 y=-3.5 theta=1.5 on map "hall-7",
 * driving true until paused). Handles instantActions: startPause / stopPause set `paused`
 * and are reported FINISHED in actionStates; other action types are reported FAILED.
 * Every published state and every received instantActions message is printed to stdout as a
 * JSON line: {"event": "state"|"instantActions"|"started", "message": {...}}; a received
 * message that the library's JSON schema rejects also as {"event": "schemaComplaint", ...}.
 * Stops cleanly (connection OFFLINE) on SIGTERM/SIGINT.
 */
"use strict";

const { AgvClient, Topic } = require("vda-5050-lib");

const [brokerUrl, interfaceName, manufacturer, serialNumber] = process.argv.slice(2);
if (!serialNumber) {
    console.error("usage: node vehicle.js <brokerUrl> <interfaceName> <manufacturer> <serialNumber>");
    process.exit(2);
}

const out = (event, message) => process.stdout.write(JSON.stringify({ event, message }) + "\n");

const state = {
    orderId: "",
    orderUpdateId: 0,
    lastNodeId: "",
    lastNodeSequenceId: 0,
    nodeStates: [],
    edgeStates: [],
    agvPosition: { x: 12.25, y: -3.5, theta: 1.5, mapId: "hall-7", positionInitialized: true, localizationScore: 0.97 },
    velocity: { vx: 0.8, vy: 0, omega: 0 },
    loads: [],
    driving: true,
    paused: false,
    newBaseRequest: false,
    distanceSinceLastNode: 0,
    actionStates: [],
    batteryState: { batteryCharge: 87.5, batteryVoltage: 48.2, batteryHealth: 99, charging: false, reach: 3500 },
    operatingMode: "AUTOMATIC",
    errors: [],
    information: [],
    safetyState: { eStop: "NONE", fieldViolation: false },
};

const client = new AgvClient(
    { manufacturer, serialNumber },
    {
        interfaceName,
        transport: { brokerUrl, heartbeat: 5, reconnectPeriod: 500 },
        vdaVersion: "2.0.0",
        // The library's 2.0 JSON schema requires the instantActions array under the key
        // "instantActions" (as in 1.1), the 2.0 spec text names it "actions". Validate inbound
        // messages here instead, report what the schema says and accept both keys.
        topicObjectValidation: { inbound: false, outbound: true },
    },
);

let timer;
let stopping = false;

async function publishState() {
    if (stopping) return;
    try {
        const sent = await client.publish(Topic.State, state, { dropIfOffline: true });
        if (sent) out("state", sent);
    } catch (err) {
        console.error("publishing state failed:", err && err.message ? err.message : err);
    }
}

function onInstantActions(msg) {
    out("instantActions", msg);
    try {
        client.validateTopicObject(Topic.InstantActions, msg, "2.0.0");
    } catch (err) {
        out("schemaComplaint", { topic: "instantActions", error: String(err && err.message ? err.message : err) });
    }
    for (const action of msg.actions || msg.instantActions || []) {
        let status = "FINISHED";
        let resultDescription;
        if (action.actionType === "startPause") {
            state.paused = true;
            state.driving = false;
            state.velocity = { vx: 0, vy: 0, omega: 0 };
        } else if (action.actionType === "stopPause") {
            state.paused = false;
            state.driving = true;
            state.velocity = { vx: 0.8, vy: 0, omega: 0 };
        } else if (action.actionType !== "stateRequest") {
            status = "FAILED";
            resultDescription = `actionType ${action.actionType} not supported`;
        }
        const actionState = { actionId: action.actionId, actionType: action.actionType, actionStatus: status };
        if (resultDescription) actionState.resultDescription = resultDescription;
        state.actionStates.push(actionState);
    }
    publishState(); // report at once, as the spec asks for state changes
}

async function main() {
    await client.start(); // publishes connection ONLINE (retained); Will: CONNECTIONBROKEN
    await client.subscribe(Topic.InstantActions, onInstantActions);
    out("started", { manufacturer, serialNumber, interfaceName });
    await publishState();
    timer = setInterval(publishState, 200);
}

async function shutdown() {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    try {
        await client.stop(); // publishes connection OFFLINE (retained)
    } catch (err) {
        console.error("stop failed:", err && err.message ? err.message : err);
    }
    process.exit(0);
}

process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
main().catch((err) => {
    console.error("vehicle failed:", err && err.stack ? err.stack : err);
    process.exit(1);
});
