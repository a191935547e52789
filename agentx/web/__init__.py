"""The local web app (`agentx serve`): agentx/web/server.py."""
