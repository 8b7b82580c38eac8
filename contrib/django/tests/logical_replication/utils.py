def system_model(model_class):
    model_class._meta.system_model = True
    return model_class


def delete_model(model_class):
    model_class = system_model(model_class)
    model_class._meta.delete_model = True
    return model_class


def denormalize_model(model_class):
    model_class = delete_model(model_class)
    model_class._meta.denormalize_model = True
    return model_class
