// An Eclipse Tahu (npm "sparkplug-client") edge node for shopfloor's Sparkplug host test.
//
//   node edge.js <mqtt url> <group id> <edge node id>
//
// Publishes NBIRTH and a DBIRTH (device "dev1") with metrics of many datatypes, then NDATA
// and DDATA that use the aliases only, prints every payload it published as one JSON line on
// stdout ({"kind", "device", "payload"}), a final {"done": true}, and exits.
"use strict";

const sparkplug = require("sparkplug-client");

const [url, groupId, edgeNode] = process.argv.slice(2);
if (!url || !groupId || !edgeNode) {
    console.error("usage: node edge.js <mqtt url> <group id> <edge node id>");
    process.exit(2);
}

const client = sparkplug.newClient({
    serverUrl: url,
    username: "",
    password: "",
    groupId: groupId,
    edgeNode: edgeNode,
    clientId: `tahu-${edgeNode}`,
    publishDeath: true,
    version: "spBv1.0",
});

function emit(kind, device, payload) {
    process.stdout.write(JSON.stringify({ kind, device, payload }) + "\n");
}

function stamped(ts, metrics) {
    // every metric carries its own timestamp except the last (it falls back to the payload's)
    return metrics.map((m, i) => (i < metrics.length - 1 ? { ...m, timestamp: ts - 10 + i } : m));
}

let done = false;

client.on("birth", () => {
    if (done) {
        return;
    }
    done = true;
    const t0 = Date.now();
    const nbirth = {
        timestamp: t0,
        metrics: stamped(t0, [
            { name: "Line/Speed", alias: 1, type: "Double", value: 12.625 },
            { name: "Line/Count", alias: 2, type: "Int64", value: -1234567890123 },
            { name: "Line/Mode", alias: 3, type: "String", value: "AUTO" },
            { name: "Line/Enabled", alias: 4, type: "Boolean", value: true },
            { name: "Line/Temp", alias: 5, type: "Float", value: 21.5 },
            { name: "Line/Small", alias: 6, type: "Int8", value: -5 },
            { name: "Line/Short", alias: 7, type: "Int16", value: -300 },
            { name: "Line/Int", alias: 8, type: "Int32", value: -70000 },
            { name: "Line/Byte", alias: 9, type: "UInt8", value: 200 },
            { name: "Line/Word", alias: 10, type: "UInt16", value: 60000 },
            { name: "Line/DWord", alias: 11, type: "UInt32", value: 4000000000 },
            { name: "Line/QWord", alias: 12, type: "UInt64", value: 9007199254740991 },
            { name: "Line/Started", alias: 13, type: "DateTime", value: 1700000000123 },
            { name: "Line/Note", alias: 14, type: "Text", value: "grüß dich" },
            { name: "Line/Batch", alias: 15, type: "UUID", value: "0b9d6a8e-3c1f-4e8a-9a51-4c2f1d7e8b90" },
        ]),
    };
    client.publishNodeBirth(nbirth); // adds seq 0 and the bdSeq metric
    emit("NBIRTH", "", nbirth);

    const dbirth = {
        timestamp: t0 + 1,
        metrics: stamped(t0 + 1, [
            { name: "Pressure", alias: 100, type: "Double", value: 1.25 },
            { name: "Valve", alias: 101, type: "Boolean", value: false },
            { name: "Cycles", alias: 102, type: "UInt32", value: 7 },
        ]),
    };
    client.publishDeviceBirth("dev1", dbirth);
    emit("DBIRTH", "dev1", dbirth);

    const ndata = {
        timestamp: t0 + 2,
        metrics: stamped(t0 + 2, [
            { alias: 1, type: "Double", value: 13.5 },
            { alias: 2, type: "Int64", value: 42 },
            { alias: 3, type: "String", value: null },
            { alias: 4, type: "Boolean", value: false },
            { alias: 6, type: "Int8", value: 127 },
            { alias: 8, type: "Int32", value: -2147483648 },
            { alias: 5, type: "Float", value: -0.75 },
        ]),
    };
    client.publishNodeData(ndata);
    emit("NDATA", "", ndata);

    const ddata = {
        timestamp: t0 + 3,
        metrics: stamped(t0 + 3, [
            { alias: 100, type: "Double", value: 2.5 },
            { alias: 102, type: "UInt32", value: 4294967295 },
            { alias: 101, type: "Boolean", value: true },
        ]),
    };
    client.publishDeviceData("dev1", ddata);
    emit("DDATA", "dev1", ddata);

    process.stdout.write(JSON.stringify({ done: true }) + "\n");
    // stop() ends the MQTT session gracefully once the queued messages are written
    client.stop();
});

client.on("error", (err) => {
    console.error(`edge.js: ${err}`);
    process.exit(1);
});
