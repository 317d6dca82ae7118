import asyncio
from crewai_tools.aws.bedrock.code_interpreter import create_code_interpreter_toolkit
toolkit, tools = create_code_interpreter_toolkit(region="us-east-1")
print(sorted(t.name for t in tools))
