-- Prosody 0.12 configuration for a throwaway Sealroom development or test
-- stack. contrib/sealroom-dev fills in the placeholders (capitals between
-- at-signs) and runs Prosody as the prosody user from the run directory.
-- Every listener is on loopback: the component port carries an unencrypted
-- XEP-0114 stream.

pidfile = "@PROSODY_DIR@/prosody.pid"
data_path = "@PROSODY_DIR@/data"
log = {
    { levels = { min = "@PROSODY_LOG_LEVEL@" }, to = "file", filename = "@PROSODY_DIR@/prosody.log" };
}

interfaces = { "127.0.0.1" }
c2s_ports = { @C2S_PORT@ }
component_ports = { @COMPONENT_PORT@ }
component_interfaces = { "127.0.0.1" }
s2s_ports = { }
http_ports = { }
https_ports = { }
c2s_direct_tls_ports = { }

-- mod_limits is left out on purpose: Debian's stock setting throttles c2s
-- to 10 kB/s, which would make every load test measure the throttle.
modules_enabled = { "disco", "roster", "saslauth", "ping", "posix"@PROSODY_TLS_MODULE@ }
modules_disabled = { "s2s" }

-- contrib/sealroom-dev copies contrib/prosody/mod_sealroom_fanout.lua here.
plugin_paths = { "@PROSODY_DIR@/plugins" }

authentication = "internal_hashed"
storage = "internal"

-- Loopback only, so clients may authenticate without TLS. With
-- SEALROOM_DEV_TLS=1, mod_tls is added above and a self-signed certificate
-- for localhost sits in certs/, so Prosody also offers STARTTLS (mod_tls
-- without a certificate would offer a STARTTLS that cannot succeed).
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
certificates = "@PROSODY_DIR@/certs"

-- Read up to 64 KiB per socket and loop turn (default 4 KiB): a fan-out
-- batch from sealroomd for a large room is bigger than 4 KiB, and reading
-- it in one turn lets Prosody write each occupant's copies together.
network_default_read_size = 65536

-- Tests open many sessions per user and send large protocol payloads.
c2s_stanza_size_limit = 256 * 1024
component_stanza_size_limit = 512 * 1024

VirtualHost "localhost"
    -- One reflected room message from sealroomd, copied here to every
    -- occupant (sealroomd's xmpp.fanout_jid = localhost).
    modules_enabled = { "sealroom_fanout" }
    sealroom_fanout_components = { "@SERVICE@" }

Component "@SERVICE@"
    component_secret = "@COMPONENT_SECRET@"

-- Prosody's own MUC with MAM: the plaintext baseline for the benchmarks.
Component "@MUC_SERVICE@" "muc"
    modules_enabled = { "muc_mam" }
    muc_log_by_default = true
    muc_log_all_rooms = true
    max_history_messages = 50
    restrict_room_creation = "local"
