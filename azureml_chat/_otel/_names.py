"""The attribute, event and metric names this package reports (OpenTelemetry semantic conventions v1.41, GenAI
and HTTP pages), and its own names, all under ``azureml_chat.``."""

from __future__ import annotations

# --- GenAI (docs/gen-ai/gen-ai-spans.md, gen-ai-metrics.md) ----------------------------------------------------
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_STOP = "gen_ai.request.stop_sequences"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT = "gen_ai.usage.input_tokens"
USAGE_OUTPUT = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
USAGE_REASONING = "gen_ai.usage.reasoning.output_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
TOKEN_TYPE = "gen_ai.token.type"

METRIC_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKENS = "gen_ai.client.token.usage"
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"

# The well-known provider value for the Azure AI Model Inference API (docs/gen-ai/azure-ai-inference.md), and
# ours for the Azure ML routes the conventions have no value for.
PROVIDER_AZURE_AI_INFERENCE = "azure.ai.inference"
PROVIDER_AZURE_ML = "azure.ml"

# --- general ----------------------------------------------------------------------------------------------
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
HTTP_STATUS = "http.response.status_code"

# --- ours ---------------------------------------------------------------------------------------------------
REQUEST_ID = "azureml_chat.request_id"
DEPLOYMENT = "azureml_chat.deployment"
ATTEMPTS = "azureml_chat.attempts"
ENDPOINT = "azureml_chat.endpoint"
ATTEMPT_EVENT = "azureml_chat.attempt"
ATTEMPT_NUMBER = "azureml_chat.attempt.number"
ATTEMPT_WAIT = "azureml_chat.attempt.wait"
ATTEMPT_DURATION = "azureml_chat.attempt.duration"

# The opt-in switch for message content (docs/gen-ai/gen-ai-spans.md, "Capturing instructions, inputs, and
# outputs"; the name the contrib instrumentations read).
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
