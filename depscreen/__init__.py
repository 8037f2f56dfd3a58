"""depscreen: streaming real-time depression screening (engine, streamer, clients, wire contract)."""
