-- Restrictable API keys (archipel_proto::macaroon). A key issued from now on
-- is found by the hash of its head, with the secret its HMAC chain starts
-- from; keys issued before (secret NULL) are found by the hash of the whole
-- key and cannot be restricted.
ALTER TABLE api_keys ADD COLUMN secret BYTEA;

-- Revoked keys, by the tail they end in: a key is refused when any tail of
-- its chain is here, so revoking a key revokes every key restricted from it.
CREATE TABLE revoked_api_keys (
    key_hash BYTEA NOT NULL,
    tail BYTEA NOT NULL,
    revoked_at BIGINT NOT NULL,
    PRIMARY KEY (key_hash, tail)
);
