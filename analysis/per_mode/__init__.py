"""The modes study (RQ3, RQ4): the units each mode uses, interventions on them, neuron reading, the limits map."""
