"""The judge, as the course runs it: its accuracy function and speed formula (`scoring`), its
sets and limits (`rules`), an emulator that drives a server the way it does (`emulator`), and
what a max_tokens cap leaves of answers a model knows (`ceiling`). Nothing here imports torch,
optuna or mlflow: the judge image's serving code may use it."""
