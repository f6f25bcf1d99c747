# The web service: its own configuration, and session encryption with a key it cannot read.
path "secret/data/web/*" {
  capabilities = ["read"]
}

path "transit/encrypt/web-sessions" {
  capabilities = ["update"]
}

path "transit/decrypt/web-sessions" {
  capabilities = ["update"]
}
