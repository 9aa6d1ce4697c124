-- mod_sealroom_fanout: server-side fan-out of room messages for sealroomd.
--
-- sealroomd reflects every stored room message to every occupant. Sent as one
-- stanza per occupant over the component link, Prosody parses each copy in
-- full. With this module sealroomd sends, per room and loop turn, one stanza
-- to the host this module is loaded on, carrying XEP-0033 bcc <addresses/>
-- and either
--   * the message itself (plain XEP-0033), or
--   * a <batch xmlns='urn:xmpp:sealroom:fanout:0'> of <item except='JID'
--     self-id='ID'> elements, each holding one message and naming its
--     sender's session, which gets its copy with the id it gave the message
--     (self-id; without it, no copy), in its place among the others so that
--     every session sees the room's messages in archive order;
-- and Prosody delivers every message to every address, parsing the list once
-- and writing each occupant's messages together — the way its own MUC fans
-- out.
--
-- Only components named in sealroom_fanout_components may use it: anyone
-- else gets <forbidden/>, so users cannot turn it into a spam amplifier.
--
-- Load it on the VirtualHost that sealroomd's xmpp.fanout_jid names:
--   VirtualHost "example.com"
--     modules_enabled = { "sealroom_fanout" }
--     sealroom_fanout_components = { "rooms.example.com" }
-- and put the directory holding this file in plugin_paths.

local st = require "util.stanza";
local jid_host = require "util.jid".host;

local xmlns_address = "http://jabber.org/protocol/address";
local xmlns_fanout = "urn:xmpp:sealroom:fanout:0";
local trusted = module:get_option_set("sealroom_fanout_components", {});
local max_addresses = module:get_option_number("sealroom_fanout_max_addresses", 1024);

local function is_trusted(origin, stanza)
	return origin.type == "component" and trusted:contains(origin.host)
		and jid_host(stanza.attr.from) == origin.host;
end

module:hook("message/host", function (event)
	local origin, stanza = event.origin, event.stanza;
	local addresses = stanza:get_child("addresses", xmlns_address);
	if not addresses then return; end -- not ours: let other handlers see it
	if not is_trusted(origin, stanza) then
		-- An error is never answered with an error (RFC 6120 8.3.1); Prosody's
		-- error_reply would throw on one.
		if stanza.attr.type ~= "error" then
			origin.send(st.error_reply(stanza, "auth", "forbidden",
				"Fan-out is only for trusted Sealroom components"));
		end
		return true;
	end
	local targets, n = {}, 0;
	for address in addresses:childtags("address", xmlns_address) do
		local jid = address.attr.jid;
		if jid and (address.attr.type == "bcc" or address.attr.type == "to") then
			n = n + 1;
			if n > max_addresses then
				origin.send(st.error_reply(stanza, "modify", "policy-violation",
					"Too many addresses in one fan-out stanza"));
				return true;
			end
			targets[n] = jid;
		end
	end

	-- Delivery serialises a stanza at once, so one object can be re-addressed
	-- for every recipient, as mod_muc does.
	local batch = stanza:get_child("batch", xmlns_fanout);
	if not batch then
		-- Recipients must not see the address list (bcc semantics).
		stanza:remove_children("addresses", xmlns_address);
		for i = 1, n do
			stanza.attr.to = targets[i];
			module:send(stanza);
		end
		return true;
	end

	local messages, excepts, self_ids, m = {}, {}, {}, 0;
	for item in batch:childtags("item", xmlns_fanout) do
		local message = item.tags[1];
		-- A batch carries only the component's own room messages.
		if message and message.name == "message" and jid_host(message.attr.from) == origin.host then
			-- Parsed inside <batch/>, the message and its client-namespace
			-- children carry an explicit xmlns; drop it, or every copy would
			-- be serialised with it.
			message.attr.xmlns = nil;
			for _, child in ipairs(message.tags) do
				if child.attr.xmlns == "jabber:client" then child.attr.xmlns = nil; end
			end
			m = m + 1;
			messages[m], excepts[m], self_ids[m] = message, item.attr.except, item.attr["self-id"];
		end
	end
	for i = 1, n do
		local to = targets[i];
		for j = 1, m do
			local message = messages[j];
			if excepts[j] ~= to then
				message.attr.to = to;
				module:send(message);
			elseif self_ids[j] then
				-- The sender's own copy, in its place in the room's order,
				-- carrying the id the sender gave the message.
				local id = message.attr.id;
				message.attr.to, message.attr.id = to, self_ids[j];
				module:send(message);
				message.attr.id = id;
			end
		end
	end
	return true;
end, 10);

module:log("info", "Sealroom fan-out enabled for: %s", tostring(trusted));
