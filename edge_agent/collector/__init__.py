"""The school server's side: MQTT in, a store, charts out."""
