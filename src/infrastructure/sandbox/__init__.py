"""Sandbox peers: local servers that speak each provider's protocol (SMTP, Twilio- and
Vonage-shaped SMS APIs, FCM v1 with its OAuth token endpoint, APNs over HTTP/2, a webhook sink).
`notifyd dev` points the providers at them so a newcomer sees real deliveries, and the
integration tests drive the adapters against them."""
