"""The CTR job's shared names: the columns both engines read (ctr_audiences.py with Spark MLlib,
ctr_inprocess.py with scikit-learn) and the log-loss clip."""

USER_COL = "user_id"
CAMPAIGN_COL = "campaign_id"
DATE_COL = "impression_date"
CLICK_COL = "clicked"
P_CLICK_COL = "p_click"
HOUR_COL = "impression_hour"
CATEGORICAL_COLS = ("placement", "channel", HOUR_COL)  # one-hot in the model
LOG_LOSS_EPSILON = 1e-15  # probabilities are clipped to [eps, 1 - eps] for the log loss
