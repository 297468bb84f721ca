"""The device port: a lean HTTP/1.1 server (`http1`) and the OsmAnd / Traccar Client handler (`osmand`),
run as a process of its own (`tracker-jobs listener`), so nothing slow shares its event loop."""
